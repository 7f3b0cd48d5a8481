"""`lora-studio train CONFIG --processes 2`: the app launches accelerate itself (two CPU processes, gloo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from lora_studio.config import TrainingConfig, save
from lora_studio.core import events as ev
from lora_studio.core.training.checkpoint import list_checkpoints
from lora_studio.core.training.launch import free_port

ADAPTER = "pytorch_lora_weights.safetensors"


@pytest.fixture()
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for i, color in enumerate([(200, 40, 40), (40, 40, 200), (40, 160, 40), (120, 120, 120)]):
        im = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(im).rectangle((8 + 4 * i, 8, 56, 56 - 4 * i), fill=color)
        im.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"shape {i} in zebra style", encoding="utf-8")
    return folder


def _config(tmp_path, data, name: str, **kw) -> Path:
    base = dict(pretrained_model_name_or_path="demo", train_data_dir=str(data), output_dir=str(tmp_path / name),
                resolution=64, rank=4, max_train_steps=4, checkpointing_steps=2, seed=3, report_to="none")
    base.update(kw)
    save(TrainingConfig(**base), tmp_path / f"{name}.toml")
    return tmp_path / f"{name}.toml"


def _env(tmp_path) -> dict:
    # An empty HF_HOME: no accelerate default config exists, so nothing can come from `accelerate config`.
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", HF_HOME=str(tmp_path / "hf_home"))


def _lora_studio(tmp_path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lora_studio", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(tmp_path))


def _events(path: Path) -> list:
    return list(ev.read_jsonl(path.read_text(encoding="utf-8").splitlines()))


@pytest.mark.slow
def test_two_processes_match_a_hand_run_accelerate_launch(tmp_path, data):
    proc = _lora_studio(tmp_path, "train", str(_config(tmp_path, data, "app")), "--processes", "2",
                        "--events", str(tmp_path / "ev.jsonl"))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert str(tmp_path / "app" / ADAPTER) in out
    events = _events(tmp_path / "ev.jsonl")
    assert isinstance(events[-1], ev.Finished) and events[-1].result["num_processes"] == 2
    assert [e.step for e in events if isinstance(e, ev.Progress) and e.phase == "train"] == [1, 2, 3, 4]
    assert not any(isinstance(e, ev.Failed) for e in events)
    assert "4/4" in err  # the parent's progress bar, drawn from rank 0's events

    # What a user would type by hand. (`accelerate launch --cpu --num_processes 2` starts ONE process
    # without mpirun; the multi-GPU launcher starts two, which join with gloo on a machine without GPUs.)
    hand = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--main_process_port", str(free_port()), "-m", "lora_studio", "train",
                           str(_config(tmp_path, data, "hand")), "--events", str(tmp_path / "hand.jsonl")],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert hand.returncode == 0, hand.stderr
    assert _events(tmp_path / "hand.jsonl")[-1].result["num_processes"] == 2
    ours, theirs = load_file(tmp_path / "app" / ADAPTER), load_file(tmp_path / "hand" / ADAPTER)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-5, rtol=0)


def _rank_process(parent_pid: int, rank: str) -> psutil.Process | None:
    for child in psutil.Process(parent_pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == rank and "lora_studio" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def _wait_for_step(path: Path, step: int, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        if path.exists() and any(isinstance(e, ev.Progress) and e.phase == "train" and e.step >= step
                                 for e in _events(path)):
            return
        time.sleep(0.2)
    raise AssertionError(proc.communicate()[1])


@pytest.mark.slow
def test_a_crashed_process_stops_the_others_and_is_named(tmp_path, data):
    cfg = _config(tmp_path, data, "crash", max_train_steps=400, checkpointing_steps=2)
    proc = _lora_studio(tmp_path, "train", str(cfg), "--processes", "2", "--events", str(tmp_path / "ev.jsonl"))
    _wait_for_step(tmp_path / "ev.jsonl", 3, proc)
    ranks = [_rank_process(proc.pid, r) for r in ("0", "1")]
    assert all(ranks)
    os.kill(ranks[1].pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "process 1 of 2 failed (exit code -9, SIGKILL)" in err and "Traceback" not in err
    last = _events(tmp_path / "ev.jsonl")[-1]
    assert isinstance(last, ev.Failed) and "process 1 of 2" in last.message and "--resume" in last.advice
    assert not ranks[0].is_running() or ranks[0].status() == psutil.STATUS_ZOMBIE
    # Only whole checkpoints under their real names (a killed writer leaves at most a hidden temporary folder).
    found = list_checkpoints(tmp_path / "crash")
    assert found and all((p / ADAPTER).is_file() and (p / "training_state.pt").is_file() for p in found)
    visible = [p.name for p in (tmp_path / "crash" / "checkpoints").iterdir() if not p.name.startswith(".")]
    assert sorted(visible) == sorted(p.name for p in found)


@pytest.mark.slow
def test_ctrl_c_stops_every_process_at_one_step_and_saves(tmp_path, data):
    cfg = _config(tmp_path, data, "stop", max_train_steps=400, checkpointing_steps=1000)
    proc = _lora_studio(tmp_path, "train", str(cfg), "--processes", "2", "--events", str(tmp_path / "ev.jsonl"))
    _wait_for_step(tmp_path / "ev.jsonl", 2, proc)
    ranks = [_rank_process(proc.pid, r) for r in ("0", "1")]
    proc.send_signal(signal.SIGINT)  # the terminal's Ctrl-C reaches the app, which asks every rank to stop
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    last = _events(tmp_path / "ev.jsonl")[-1]
    assert isinstance(last, ev.Finished) and last.result["stopped"] and last.result["num_processes"] == 2
    step = last.result["steps"]
    assert f"stopped at step {step}/400" in out
    assert [p.name for p in list_checkpoints(tmp_path / "stop")] == [f"checkpoint-{step}"]
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in ranks)
    assert not (tmp_path / "stop" / "launch" / "STOP").exists()


@pytest.mark.slow
def test_ranks_stop_and_save_when_the_app_dies(tmp_path, data):
    cfg = _config(tmp_path, data, "orphan", max_train_steps=400, checkpointing_steps=1000)
    proc = _lora_studio(tmp_path, "train", str(cfg), "--processes", "2", "--events", str(tmp_path / "ev.jsonl"))
    _wait_for_step(tmp_path / "ev.jsonl", 2, proc)
    everyone = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()  # the app is gone without asking anyone to stop
    proc.communicate()
    gone, alive = psutil.wait_procs(everyone, timeout=300)
    assert not alive
    last = _events(tmp_path / "ev.jsonl")[-1]
    assert isinstance(last, ev.Finished) and last.result["stopped"] and last.result["steps"] < 400
    assert [p.name for p in list_checkpoints(tmp_path / "orphan")] == [f"checkpoint-{last.result['steps']}"]
