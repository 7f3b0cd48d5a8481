"""A default `lora-studio train` run as a new user starts it: nothing on the terminal but the app's own
progress and result (no library warnings, no TensorBoard or false cache warning, no cursor-moving escape
codes in a log), the run under Documents/LoRA Studio/runs with absolute paths, files readable by others."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.core.demo import demo_dataset_path


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("default-run")
    home = root / "home"
    home.mkdir()
    # only what a user would set: the dataset, and a size and length the demo model trains in seconds
    (root / "run.toml").write_text(f'train_data_dir = "{demo_dataset_path("style").as_posix()}"\n'
                                   "resolution = 64\nmax_train_steps = 2\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "TQDM_", "TRANSFORMERS_", "DIFFUSERS_",
                                                                      "LORA_STUDIO_", "HF_HUB_DISABLE"))}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    old = os.umask(0o022)  # the child inherits it
    try:
        proc = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(root / "run.toml")],
                              capture_output=True, text=True, env=env, cwd=root)
    finally:
        os.umask(old)
    return home, proc


@pytest.mark.skipif(sys.platform.startswith("win"), reason="HOME and POSIX modes")
def test_default_train_run_prints_only_the_apps_own_lines(default_run):
    home, proc = default_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    for noise in ("FutureWarning", "UserWarning", "DeprecationWarning", "TensorBoard", "tensorboard",
                  "cache_latents", "[transformers]", "Loading pipeline components", "Loading weights", "\x1b[A"):
        assert noise not in text, (noise, text[-3000:])
    assert "training" in proc.stderr and "2/2" in proc.stderr  # the app's own progress bar stays


@pytest.mark.skipif(sys.platform.startswith("win"), reason="HOME and POSIX modes")
def test_default_run_lands_in_documents_with_absolute_paths_and_0644_files(default_run):
    home, proc = default_run
    run_dir = home / "Documents" / "LoRA Studio" / "runs" / "lora-output"
    main_file = run_dir / "lora-output.safetensors"  # the one file every loader reads, named after the run
    adapter = run_dir / "pytorch_lora_weights.safetensors"
    assert f"{main_file}" in proc.stdout and f"{adapter}" in proc.stdout  # absolute, as printed
    written = [p for p in run_dir.rglob("*")]
    assert main_file in written and adapter in written
    modes = {p.relative_to(run_dir).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [run_dir, *written]}
    assert modes == {name: 0o755 if (run_dir / name).is_dir() else 0o644 for name in modes}, modes
