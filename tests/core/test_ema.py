"""The moving average of the LoRA weights (`ema_decay`): what is saved, that training is untouched, resume."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lora_studio.core import events as ev
from lora_studio.core.training import train
from lora_studio.core.training.checkpoint import checkpoints_dir
from lora_studio.core.training.ema import LoraEma
from tests.core.test_training import Recorder, config, make_dataset, sd1_dir  # noqa: F401 (fixture)

DECAY, STEPS = 0.8, 5


def test_average_math_and_swap():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = LoraEma([p], 0.5)
    for v in (1.0, 2.0, 3.0):
        with torch.no_grad():
            p.fill_(v)
        ema.update()
    # rates: min(0.5, 2/11), min(0.5, 3/12), min(0.5, 4/13)
    want = 0.0
    for k, v in enumerate((1.0, 2.0, 3.0), start=1):
        d = min(0.5, (1 + k) / (10 + k))
        want = d * want + (1 - d) * v
    with ema.applied():
        assert torch.allclose(p, torch.full((3,), want))
    assert torch.equal(p.detach(), torch.full((3,), 3.0))  # the live weights come back
    other = LoraEma([p], 0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 3 and torch.equal(other.shadow[0], ema.shadow[0])


@pytest.mark.slow
def test_saved_adapter_is_the_average_of_the_updates_and_training_is_unchanged(sd1_dir, tmp_path):
    data = make_dataset(tmp_path / "data", n=2, captions=["a red circle", "a blue circle"])
    common = dict(max_train_steps=STEPS, learning_rate=5e-3)
    avg = train(config(sd1_dir, data, tmp_path / "ema", ema_decay=DECAY, checkpointing_steps=1,
                       checkpoints_total_limit=0, **common), Recorder())
    live = train(config(sd1_dir, data, tmp_path / "live", **common), Recorder())
    start = train(config(sd1_dir, data, tmp_path / "w0", max_train_steps=1, learning_rate=0.0), Recorder())
    assert [x for _, x in avg["loss_history"]] == [x for _, x in live["loss_history"]]  # the average is a read-out

    weights = [load_file(start["adapter_path"])]  # the initial adapter (lr 0: one step changes nothing)
    weights += [load_file(str(checkpoints_dir(tmp_path / "ema") / f"checkpoint-{k}" / "pytorch_lora_weights.safetensors"))
                for k in range(1, STEPS)]
    weights.append(load_file(live["adapter_path"]))  # the last update's weights (the same run without the average)
    want = {key: t.float() for key, t in weights[0].items()}
    for k, w in enumerate(weights[1:], start=1):
        d = min(DECAY, (1 + k) / (10 + k))
        want = {key: d * want[key] + (1 - d) * w[key].float() for key in want}
    saved = load_file(avg["adapter_path"])
    assert saved.keys() == want.keys()
    moved = 0.0
    for key in want:
        torch.testing.assert_close(saved[key].float(), want[key], atol=1e-6, rtol=0)
        moved = max(moved, float((saved[key].float() - weights[-1][key].float()).abs().max()))
    assert moved > 1e-4  # the file is not the last step's weights


@pytest.mark.slow
def test_resumed_run_saves_the_same_average(sd1_dir, tmp_path):
    data = make_dataset(tmp_path / "data", n=2, captions=["a red circle", "a blue circle"])
    common = dict(max_train_steps=STEPS, learning_rate=5e-3, ema_decay=DECAY, checkpointing_steps=2)
    full = train(config(sd1_dir, data, tmp_path / "full", **common), Recorder())
    events = Recorder()
    first = train(config(sd1_dir, data, tmp_path / "split", **common), events,
                  stop=lambda: len(events.of(ev.Progress, "train")) >= 3)
    assert first["stopped"] and first["steps"] == 3
    second = train(config(sd1_dir, data, tmp_path / "split", **common), Recorder(), resume=True)
    a, b = load_file(full["adapter_path"]), load_file(second["adapter_path"])
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
