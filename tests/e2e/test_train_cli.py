"""`lora-studio train CONFIG.toml [--resume] [--events F]` as a user runs it (a child process, CPU)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from lora_studio.config import TrainingConfig, save
from lora_studio.core import events as ev


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from lora_studio.core.demo.build import build_pipeline

    path = tmp_path_factory.mktemp("model") / "sd1"
    build_pipeline("sd1", seed=1).save_pretrained(path)
    return path


def _dataset(folder: Path) -> Path:
    folder.mkdir()
    for i, color in enumerate([(200, 40, 40), (40, 40, 200)]):
        im = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(im).rectangle((12, 12, 52, 52), fill=color)
        im.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("a square in zebra style", encoding="utf-8")
    return folder


def _config(tmp_path, model_dir, **kw) -> Path:
    cfg = TrainingConfig(pretrained_model_name_or_path=str(model_dir), train_data_dir=str(_dataset(tmp_path / "d")),
                         output_dir=str(tmp_path / "out"), resolution=64, rank=4, report_to="none", **kw)
    save(cfg, tmp_path / "run.toml")
    return tmp_path / "run.toml"


def _cli(*args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "lora_studio", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _events(path: Path) -> list:
    return list(ev.read_jsonl(path.read_text(encoding="utf-8").splitlines()))


def test_train_writes_adapter_and_event_stream(tmp_path, model_dir):
    cfg = _config(tmp_path, model_dir, max_train_steps=4, checkpointing_steps=2)
    proc = _cli("train", str(cfg), "--events", str(tmp_path / "ev.jsonl"))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert str(tmp_path / "out" / "pytorch_lora_weights.safetensors") in out
    assert out.index(str(tmp_path / "out" / "out.safetensors")) < out.index("pytorch_lora_weights")  # main file first
    assert "training" in err and "4/4" in err  # the progress bar
    events = _events(tmp_path / "ev.jsonl")
    train_steps = [e for e in events if isinstance(e, ev.Progress) and e.phase == "train"]
    assert [e.step for e in train_steps] == [1, 2, 3, 4]
    assert all(math.isfinite(e.loss) and e.eta_s is not None for e in train_steps)
    assert sum(isinstance(e, ev.Finished) for e in events) == 1 and isinstance(events[-1], ev.Finished)
    assert [e.step for e in events if isinstance(e, ev.Checkpoint)] == [2]
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()


def test_bad_config_names_the_key_without_traceback(tmp_path):
    (tmp_path / "bad.toml").write_text('learnig_rate = 0.1\n', encoding="utf-8")
    proc = _cli("train", str(tmp_path / "bad.toml"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "learnig_rate" in err and "learning_rate" in err and "Traceback" not in err


def test_missing_captions_fail_with_advice(tmp_path, model_dir):
    cfg = _config(tmp_path, model_dir, max_train_steps=2)
    (tmp_path / "d" / "1.txt").unlink()
    proc = _cli("train", str(cfg), "--events", str(tmp_path / "ev.jsonl"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "no caption" in err and "what to do:" in err and "Traceback" not in err
    events = _events(tmp_path / "ev.jsonl")
    assert isinstance(events[-1], ev.Failed) and not any(isinstance(e, ev.Finished) for e in events)


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(tmp_path, model_dir):
    cfg = _config(tmp_path, model_dir, max_train_steps=400, checkpointing_steps=1000)
    events_file = tmp_path / "ev.jsonl"
    proc = _cli("train", str(cfg), "--events", str(events_file))
    while proc.poll() is None:  # however long the first step takes on a busy machine
        lines = events_file.read_text(encoding="utf-8").splitlines() if events_file.exists() else []
        if any('"event": "Progress"' in line and '"phase": "train"' in line for line in lines):
            break  # at least one step is done
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped at step" in out
    first = _events(events_file)[-1]
    assert isinstance(first, ev.Finished) and first.result["stopped"]
    stopped_at = first.result["steps"]
    assert 1 <= stopped_at < 400
    assert (tmp_path / "out" / "checkpoints" / f"checkpoint-{stopped_at}").is_dir()

    text = cfg.read_text(encoding="utf-8").replace("max_train_steps = 400", f"max_train_steps = {stopped_at + 2}")
    cfg.write_text(text, encoding="utf-8")
    events_file.unlink()
    proc = _cli("train", str(cfg), "--resume", "--events", str(events_file))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    steps = [e.step for e in _events(events_file) if isinstance(e, ev.Progress) and e.phase == "train"]
    assert steps == [stopped_at + 1, stopped_at + 2]
