"""`install.sh --dry-run` with a fake nvidia-smi on PATH: the plan names the right torch build and the
run changes nothing on disk."""

import os
import subprocess

import pytest

from install_helpers import INSTALLER, fake_nvidia_smi, path_without_nvidia_smi, tree_snapshot

PASCAL_OLD = [("NVIDIA GeForce GTX 1080 Ti", "470.256.02", "6.1")]
CASES = {
    "pascal-old-driver": (PASCAL_OLD, False, "cu118"),
    "pascal-new-driver": ([("NVIDIA GeForce GTX 1070", "550.163.01", "6.1")], True, "cu126"),
    "rtx3060": ([("NVIDIA GeForce RTX 3060", "560.35.03", "8.6")], True, "cu126"),
    "rtx4090": ([("NVIDIA GeForce RTX 4090", "580.95.05", "8.9")], True, "cu130"),
    "rtx5090-r570": ([("NVIDIA GeForce RTX 5090", "570.172.08", "12.0")], True, "cu128"),
    "rtx5070-r580": ([("NVIDIA GeForce RTX 5070", "580.95.05", "12.0")], True, "cu130"),
    "rtx5080-old-driver": ([("NVIDIA GeForce RTX 5080", "560.35.03", "12.0")], True, "cpu"),
}


def dry_run(tmp_path, bin_dir=None, **env):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    full_env = {**os.environ, "HOME": str(home), "PATH": path_without_nvidia_smi(bin_dir), **env}
    for key in ("XDG_DATA_HOME", "LORA_STUDIO_TORCH_BUILD", "LORA_STUDIO_TORCH_INDEX", "LORA_STUDIO_NVIDIA_SMI"):
        if key not in env:
            full_env.pop(key, None)
    before = tree_snapshot(tmp_path)
    out = subprocess.run(["bash", str(INSTALLER), "--dry-run"], env=full_env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert tree_snapshot(tmp_path) == before, "--dry-run changed files"
    return out.stdout


@pytest.mark.parametrize("case", CASES)
def test_dry_run_picks_the_torch_build_for_the_gpu(tmp_path, case):
    rows, knows_cc, build = CASES[case]
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, rows, knows_compute_cap=knows_cc)
    out = dry_run(tmp_path, bin_dir)
    assert f"torch build : {build} " in out
    assert f"GPU         : {rows[0][0]}, driver {rows[0][1]}" in out
    if build == "cpu":
        assert "Update the driver to 580.65.06 or newer (at least 570.26)" in out
    else:
        assert f"from https://download.pytorch.org/whl/{build}" in out
    assert f"prefix      : {tmp_path}/home/.local/share/lora-studio" in out
    assert f"desktop     : {tmp_path}/home/.local/share/applications/lora-studio.desktop" in out


def test_dry_run_without_a_gpu_plans_the_cpu_build(tmp_path):
    out = dry_run(tmp_path)
    assert "torch build : cpu (no NVIDIA GPU found" in out
    assert "cu1" not in out and "GPU         :" not in out


def test_dry_run_with_a_driver_that_is_not_loaded(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, [], fails="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                                       "driver. Make sure that the latest NVIDIA driver is installed and running.")
    out = dry_run(tmp_path, bin_dir)
    assert "torch build : cpu" in out and "warning     : nvidia-smi failed: NVIDIA-SMI has failed" in out


def test_dry_run_honours_overrides_and_prefix(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, PASCAL_OLD, knows_compute_cap=False)
    out = dry_run(tmp_path, bin_dir, LORA_STUDIO_TORCH_BUILD="cpu", LORA_STUDIO_TORCH_INDEX="default",
                  LORA_STUDIO_TORCH_SPEC="torch==2.13.0")
    assert "torch build : cpu (chosen by LORA_STUDIO_TORCH_BUILD=cpu)" in out
    assert "torch       : torch==2.13.0\n" in out
    home = tmp_path / "home"
    out = subprocess.run(["bash", str(INSTALLER), "--dry-run", "--prefix", str(tmp_path / "opt" / "ls")],
                         env={**os.environ, "HOME": str(home)}, capture_output=True, text=True, timeout=120).stdout
    assert f"environment : {tmp_path}/opt/ls/env" in out
    assert not (tmp_path / "opt").exists()


def test_unknown_option_is_refused(tmp_path):
    out = subprocess.run(["bash", str(INSTALLER), "--frobnicate"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HOME": str(tmp_path)})
    assert out.returncode == 1 and "unknown option: --frobnicate" in out.stderr
