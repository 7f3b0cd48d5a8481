"""Windows without Triton, stood in for by bench/no_triton on PYTHONPATH (a package whose import fails): every
module of the app imports, the demo trains, and core.accel says plainly that the Triton kernels are off and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lora_studio.config import save
from lora_studio.core import events as ev
from lora_studio.core.demo.recipe import recipe_config

REPO = Path(__file__).resolve().parents[2]
SHIM = REPO / "bench" / "no_triton"
STAND_IN = "stands in for Windows without Triton"


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", QT_QPA_PLATFORM="offscreen")
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join([str(SHIM), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _python(code: str, tmp_path) -> dict:
    """Run `code` in a fresh interpreter with the shim first on the path; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_imports_and_accel_reports_no_triton(tmp_path):
    out = _python("""
        import importlib, json, pkgutil
        import lora_studio
        try:
            import triton
            shim = None
        except ImportError as exc:
            shim = str(exc)
        failed = {}
        for mod in pkgutil.walk_packages(lora_studio.__path__, "lora_studio."):
            if mod.name.rsplit(".", 1)[-1] == "__main__":
                continue  # running the CLI is not importing it
            try:
                importlib.import_module(mod.name)
            except Exception as exc:
                failed[mod.name] = repr(exc)

        import torch
        from lora_studio.core.accel import Options, prepare, triton_check
        from lora_studio.core.demo.build import make_sd1_unet
        accel = prepare(make_sd1_unet(), Options.training(torch.float32))
        stats = accel.stats()
        shipped = triton_check.kernel_path("cuda")
        triton_check.NO_TRITON_SLOWDOWN = None
        gpu = triton_check.kernel_path("cuda")
        triton_check.NO_TRITON_SLOWDOWN = 1.5
        print(json.dumps(dict(shim=shim, failed=failed, stats=stats, cpu=triton_check.kernel_path("cpu"), gpu=gpu,
                              shipped=shipped,
                              gpu_measured=triton_check.kernel_path("cuda"))))
    """, tmp_path)
    assert out["shim"] and STAND_IN in out["shim"]  # the stand-in is what answered `import triton`
    assert out["failed"] == {}
    stats = out["stats"]
    assert stats["fast_geglu"] == stats["fast_layernorm"] == stats["fast_block"] == 0  # the eager forwards
    shim_error = f"No module named 'triton' (bench/no_triton {STAND_IN})"
    assert stats["kernels"] == f"without Triton kernels: no Triton ({shim_error})"
    assert out["cpu"] == stats["kernels"]
    assert out["gpu"].startswith("without Triton kernels: no Triton (") and out["gpu"].endswith(", expect slower steps")
    assert out["gpu_measured"].endswith(", expect about 1.5x slower steps")
    assert out["shipped"].endswith(", expect about 1.2x slower steps")  # the measured figure ships


def test_installer_self_check_names_the_path(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lora_studio.core.accel.triton_check"], capture_output=True,
                          text=True, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("training kernels: without Triton kernels: no Triton (") and STAND_IN in proc.stdout


@pytest.mark.slow
def test_the_demo_trains_without_triton(tmp_path):
    cfg = recipe_config("subject", "demo", tmp_path, max_train_steps=3, num_class_images=2, sample_steps=2)
    save(cfg, tmp_path / "run.toml")
    proc = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(tmp_path / "run.toml"), "--events",
                           str(tmp_path / "ev.jsonl")], capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = list(ev.read_jsonl((tmp_path / "ev.jsonl").read_text(encoding="utf-8").splitlines()))
    done = [e for e in events if isinstance(e, ev.Finished)]
    assert done and done[0].result["steps"] == 3
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
