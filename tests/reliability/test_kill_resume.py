"""Fault injection: a training process killed (SIGKILL) at random moments leaves no partial file under a
final name, and resuming reaches the same adapter as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from lora_studio.config import TrainingConfig, save
from lora_studio.core.training import train

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")]

KILLS = 10
ADAPTER = "pytorch_lora_weights.safetensors"


def _dataset(folder: Path) -> Path:
    folder.mkdir()
    for i, color in enumerate([(200, 40, 40), (40, 40, 200), (40, 160, 40)]):
        im = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(im).ellipse((10 + 4 * i, 10, 54, 54 - 4 * i), fill=color)
        im.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"a shape number {i}", encoding="utf-8")
    return folder


def _config(tmp_path: Path, data: Path, name: str) -> TrainingConfig:
    return TrainingConfig(pretrained_model_name_or_path="demo", train_data_dir=str(data),
                          output_dir=str(tmp_path / name), resolution=64, rank=4, lora_alpha=2.0,
                          max_train_steps=8, checkpointing_steps=2, checkpoints_total_limit=2,
                          train_batch_size=2, learning_rate=1e-3, seed=7, report_to="none")


def _visible_files(root: Path):
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            yield path


def _assert_whole(root: Path) -> int:
    """Every file under a final name opens completely; returns how many were checked."""
    count = 0
    for path in _visible_files(root):
        count += 1
        if path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix in (".json",):
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            text = path.read_text(encoding="utf-8")
            for line in text.splitlines()[:-1]:  # an append-only log may end mid-line; earlier lines are whole
                json.loads(line)
        elif path.suffix == ".toml":
            tomllib.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
    return count


def _spawn(cfg_path: Path, events: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "lora_studio", "train", str(cfg_path), "--resume",
                             "--events", str(events)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigkill_at_random_moments_then_resume_matches(tmp_path):
    data = _dataset(tmp_path / "data")

    ref_cfg = _config(tmp_path, data, "reference")
    save(ref_cfg, tmp_path / "reference.toml")
    proc = _spawn(tmp_path / "reference.toml", tmp_path / "reference.jsonl")
    assert proc.wait(timeout=600) == 0
    total_events = _lines(tmp_path / "reference.jsonl")
    reference = load_file(str(Path(ref_cfg.output_dir) / ADAPTER))

    rng = random.Random(20261127)
    resumed_from_checkpoint = 0
    for k in range(KILLS):
        cfg = _config(tmp_path, data, f"killed-{k}")
        cfg_path = tmp_path / f"killed-{k}.toml"
        save(cfg, cfg_path)
        # Spread the kills over the whole run (start-up, steps, checkpoint writes, the final save), measured
        # in the run's own progress rather than in seconds, so a busy machine does not bunch them up.
        target = int(total_events * (k + rng.random()) / KILLS)
        events = tmp_path / f"killed-{k}.jsonl"
        proc = _spawn(cfg_path, events)
        while proc.poll() is None and _lines(events) < target:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        out = Path(cfg.output_dir)
        if out.exists():
            _assert_whole(out)
            if (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("checkpoint-*")):
                resumed_from_checkpoint += 1
        result = train(cfg, resume=True)
        assert result["steps"] == cfg.max_train_steps
        adapter = load_file(str(out / ADAPTER))
        assert adapter.keys() == reference.keys()
        for key in reference:
            torch.testing.assert_close(adapter[key], reference[key], atol=1e-5, rtol=0,
                                       msg=f"kill {k} at event {target}: {key} differs")
        _assert_whole(out)
    assert resumed_from_checkpoint >= 3, "too few kills landed after a checkpoint to test resuming"
