"""The training engine on tiny real SD1/SDXL pipelines (random init, the demo architecture), on CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import load_file

from lora_studio.config import TrainingConfig
from lora_studio.core import events as ev
from lora_studio.core.training import train
from lora_studio.core.training.engine import TrainingFailed

COLORS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 40)]


@pytest.fixture(scope="session")
def sd1_dir(tmp_path_factory) -> Path:
    from lora_studio.core.demo.build import build_pipeline

    path = tmp_path_factory.mktemp("models") / "sd1"
    build_pipeline("sd1", seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory) -> Path:
    from lora_studio.core.demo.build import build_pipeline

    path = tmp_path_factory.mktemp("models") / "sdxl"
    build_pipeline("sdxl", seed=0).save_pretrained(path)
    return path


def make_dataset(folder: Path, n: int = 4, captions: list[str] | None = None, size=(64, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.new("RGB", size, (250, 250, 250))
        ImageDraw.Draw(im).ellipse((8 + 2 * i, 8, size[0] - 8, size[1] - 8), fill=COLORS[i % len(COLORS)])
        im.save(folder / f"img{i}.png")
        if captions is not None:
            (folder / f"img{i}.txt").write_text(captions[i % len(captions)], encoding="utf-8")
    return folder


def config(model: Path, data: Path, out: Path, **kw) -> TrainingConfig:
    base = dict(pretrained_model_name_or_path=str(model), train_data_dir=str(data), output_dir=str(out),
                resolution=64, max_train_steps=4, checkpointing_steps=100, rank=4, learning_rate=1e-3,
                report_to="none", sample_steps=3, seed=7)
    base.update(kw)
    return TrainingConfig(**base)


class Recorder(list):
    def __call__(self, event):
        self.append(event)

    def of(self, cls, phase=None):
        return [e for e in self if isinstance(e, cls) and (phase is None or getattr(e, "phase", None) == phase)]


def assert_event_stream(events: Recorder, total: int):
    train_progress = events.of(ev.Progress, "train")
    steps = [p.step for p in train_progress]
    assert steps and all(b > a for a, b in zip(steps, steps[1:])), steps
    assert steps[-1] == total
    assert all(p.loss is not None and math.isfinite(p.loss) for p in train_progress)
    assert all(p.eta_s is not None and p.eta_s >= 0 and p.it_per_s and p.it_per_s > 0 for p in train_progress)
    assert all(p.vram_used is None and p.vram_total is None for p in train_progress)  # CPU
    assert train_progress[-1].eta_s == 0
    assert len(events.of(ev.Finished)) == 1 and isinstance(events[-1], ev.Finished)
    assert not events.of(ev.Failed)
    # Every event survives the JSON-lines round trip a multi-GPU child process uses.
    assert [ev.from_json(ev.to_json(e)) for e in events] == list(events)


def test_style_run_events_outputs_and_checkpoints(sd1_dir, tmp_path):
    data = make_dataset(tmp_path / "data", captions=["a red circle in zebra style", "a blue circle in zebra style"])
    cfg = config(sd1_dir, data, tmp_path / "out", max_train_steps=5, checkpointing_steps=1,
                 checkpoints_total_limit=2, lora_alpha=8.0, validation_prompt="a circle", validation_steps=3,
                 num_validation_images=1)
    events = Recorder()
    result = train(cfg, events)
    assert_event_stream(events, 5)
    out = tmp_path / "out"
    assert result["adapter_path"] == str(out / "pytorch_lora_weights.safetensors")
    assert result["steps"] == 5 and result["stopped"] is False and result["family"] == "sd1"
    assert result["rank"] == 4 and result["alpha"] == 8.0
    assert [s for s, _ in result["loss_history"]] == [1, 2, 3, 4, 5]
    # Checkpoints every step, only the newest two kept, each complete and loadable on its own.
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["checkpoint-3", "checkpoint-4"]
    assert [c.step for c in events.of(ev.Checkpoint)] == [1, 2, 3, 4]
    for name in names:
        assert {"pytorch_lora_weights.safetensors", "training_state.pt", "state.json"} <= {
            p.name for p in (out / "checkpoints" / name).iterdir()}
    samples = events.of(ev.Sample)
    assert [s.step for s in samples] == [3, 5] and all(Path(s.path).is_file() for s in samples)
    assert (out / "config.toml").is_file()
    # alpha != rank and the base architecture are recorded in the file.
    with safe_open(result["adapter_path"], "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["lora_studio.alpha"] == "8.0" and meta["lora_studio.rank"] == "4"
    assert meta["lora_studio.base_family"] == "sd1"
    packed = json.loads(meta["lora_adapter_metadata"])
    assert packed["unet.lora_alpha"] == 8.0 and packed["unet.r"] == 4
    assert keys and all(k.startswith("unet.") for k in keys)
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporaries left behind


def _adapter(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.slow
def test_resume_after_stop_equals_uninterrupted_run(sd1_dir, tmp_path):
    # Random flips + random crops (no latent cache), gradient accumulation and prior preservation: every
    # source of randomness and every bit of optimizer state must come back exactly.
    data = make_dataset(tmp_path / "data", n=2, size=(72, 64))
    classes = make_dataset(tmp_path / "classes", n=2)
    common = dict(mode="dreambooth", instance_prompt="a photo of sks circle", with_prior_preservation=True,
                  class_prompt="a photo of circle", class_data_dir=str(classes), num_class_images=2,
                  random_flip=True, gradient_accumulation_steps=2, max_train_steps=4, checkpointing_steps=2,
                  lr_scheduler="cosine", lr_warmup_steps=2, lora_dropout=0.1, snr_gamma=5.0, noise_offset=0.05)
    full = train(config(sd1_dir, data, tmp_path / "full", **common), Recorder())

    events = Recorder()
    stop_after = 3  # stop once step 3 is done: the run saves a checkpoint there
    first = train(config(sd1_dir, data, tmp_path / "split", **common), events,
                  stop=lambda: len(events.of(ev.Progress, "train")) >= stop_after)
    assert first["stopped"] is True and first["steps"] == stop_after
    assert len(events.of(ev.Finished)) == 1
    assert (tmp_path / "split" / "checkpoints" / f"checkpoint-{stop_after}").is_dir()

    events2 = Recorder()
    second = train(config(sd1_dir, data, tmp_path / "split", **common), events2, resume=True)
    assert [p.step for p in events2.of(ev.Progress, "train")] == [4]
    assert second["steps"] == 4
    a, b = _adapter(full["adapter_path"]), _adapter(second["adapter_path"])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
    assert [round(x, 6) for _, x in full["loss_history"]] == [round(x, 6) for _, x in second["loss_history"]]
