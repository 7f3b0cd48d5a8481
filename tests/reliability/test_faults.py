"""Injected faults during training: out of GPU memory, NaN loss, a full disk. Each ends in one Failed event
with advice, and what was written before stays whole and loadable."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from lora_studio.config import TrainingConfig
from lora_studio.core import events as ev
from lora_studio.core.training import train
from lora_studio.core.training.checkpoint import list_checkpoints
from lora_studio.core.training.step import TrainingStep
from lora_studio.errors import LoraStudioError

ADAPTER = "pytorch_lora_weights.safetensors"


@pytest.fixture()
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for i, color in enumerate([(200, 40, 40), (40, 40, 200)]):
        im = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(im).rectangle((8 + 8 * i, 8, 56, 56 - 8 * i), fill=color)
        im.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"shape {i} in zebra style", encoding="utf-8")
    return folder


def _config(tmp_path, data, **kw) -> TrainingConfig:
    base = dict(pretrained_model_name_or_path="demo", train_data_dir=str(data), output_dir=str(tmp_path / "out"),
                resolution=64, rank=4, max_train_steps=6, checkpointing_steps=2, seed=3, report_to="none")
    base.update(kw)
    return TrainingConfig(**base)


def _fail_on_call(monkeypatch, n: int, exc: BaseException):
    real = TrainingStep.__call__
    calls = {"n": 0}

    def flaky(self, batch):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", flaky)


def _run(cfg, **kw):
    events = []
    with pytest.raises(LoraStudioError) as info:
        train(cfg, events.append, **kw)
    failed = [e for e in events if isinstance(e, ev.Failed)]
    assert len(failed) == 1 and not any(isinstance(e, ev.Finished) for e in events)
    assert failed[0].message == str(info.value)
    return failed[0], events


def test_out_of_memory_gives_advice_and_keeps_the_checkpoint(tmp_path, data, monkeypatch):
    cfg = _config(tmp_path, data, train_batch_size=2, rank=32)
    _fail_on_call(monkeypatch, 5, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    failed, events = _run(cfg)
    assert "out of memory" in failed.message
    assert "gradient_checkpointing" in failed.advice and "train_batch_size" in failed.advice
    assert "rank" in failed.advice
    ckpts = list_checkpoints(cfg.output_dir)
    assert [p.name for p in ckpts] == ["checkpoint-2", "checkpoint-4"]
    load_file(str(ckpts[-1] / ADAPTER))
    # The app stays usable: the same engine, in the same process, runs again and resumes.
    monkeypatch.undo()
    result = train(cfg, resume=True)
    assert Path(result["adapter"]).is_file() if "adapter" in result else (Path(cfg.output_dir) / ADAPTER).is_file()


def test_nan_loss_stops_at_that_step(tmp_path, data, monkeypatch):
    cfg = _config(tmp_path, data)
    real = TrainingStep.__call__
    calls = {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        loss = real(self, batch)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(TrainingStep, "__call__", poisoned)
    failed, events = _run(cfg)
    assert "step 3" in failed.message and "nan" in failed.message.lower()
    assert "learning_rate" in failed.advice and "checkpoint-2" in failed.advice
    steps = [e.step for e in events if isinstance(e, ev.Progress) and e.phase == "train"]
    assert steps == [1, 2]
    load_file(str(Path(cfg.output_dir) / "checkpoints" / "checkpoint-2" / ADAPTER))


def test_disk_full_fails_clearly_and_keeps_earlier_outputs(tmp_path, data, monkeypatch):
    cfg = _config(tmp_path, data, max_train_steps=4)
    train(cfg)  # a finished run: adapter + checkpoint-2
    out = Path(cfg.output_dir)
    adapter_bytes = hashlib.sha256((out / ADAPTER).read_bytes()).hexdigest()

    # Continue it to 8 steps; the disk fills up while checkpoint-4 is being written.
    longer = cfg.replace(max_train_steps=8)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", full_disk)
    failed, _ = _run(longer, resume=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert "disk is full" in failed.message
    assert "free space" in failed.advice
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
    assert not any(p.name.startswith("checkpoint-4") for p in (out / "checkpoints").iterdir()), \
        "a partial checkpoint was left under a final name"
    load_file(str(out / "checkpoints" / "checkpoint-2" / ADAPTER))
    assert hashlib.sha256((out / ADAPTER).read_bytes()).hexdigest() == adapter_bytes
    load_file(str(out / ADAPTER))
