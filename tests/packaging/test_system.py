"""lora_studio.core.system: what torch sees, and the start-up check against the installer's record."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lora_studio.core import system


def record(tmp_path, **fields):
    path = tmp_path / "install.json"
    path.write_text(json.dumps(fields))
    return path


def test_gpu_info_matches_what_torch_sees():
    info = system.gpu_info()
    if torch.cuda.is_available():
        assert info.compute_capability == torch.cuda.get_device_capability(0) and info.total_memory > 2**28
    elif not (torch.backends.mps.is_available()):
        assert info is None


def test_cpu_install_is_fine_and_repeats_the_installers_warning(tmp_path):
    check = system.torch_check(record(tmp_path, build="cpu", device="cpu", warnings=[]))
    assert check.ok and check.expected == "cpu" and torch.__version__ in check.message
    if system.gpu_info() is None:
        warned = system.torch_check(record(tmp_path, build="cpu", device="cpu",
                                           warnings=["the NVIDIA driver 390.157 is too old ... Update the driver"]))
        assert warned.ok and "Update the driver" in warned.message


def test_cuda_install_without_a_visible_gpu_says_what_to_do(tmp_path):
    check = system.torch_check(record(tmp_path, build="cu126", device="cuda",
                                      gpus=[{"name": "NVIDIA GeForce RTX 3060", "driver": "560.35.03"}]))
    if torch.version.cuda is None:
        assert not check.ok
        assert "is a CPU build, but the installer chose cu126 for NVIDIA GeForce RTX 3060" in check.message
        assert "installer again" in check.advice
    elif not torch.cuda.is_available():
        assert not check.ok and "sees no GPU" in check.message and "nvidia-smi" in check.advice
    else:
        assert check.ok or "no kernels" in check.message
    assert check.summary().count("what to do:") == (0 if check.ok else 1)


def test_mps_install_on_a_machine_without_mps(tmp_path):
    check = system.torch_check(record(tmp_path, build="mps", device="mps"))
    assert check.ok == torch.backends.mps.is_available()


def test_broken_record_is_reported_not_raised(tmp_path):
    path = tmp_path / "install.json"
    path.write_text("{not json")
    check = system.torch_check(path)
    assert not check.ok and str(path) in check.message and check.advice


@pytest.mark.parametrize("archs, cc, ok", [
    (["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], (6, 1), True),   # cu126 on a GTX 1080
    (["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], (8, 9), True),   # sm_86 code on an RTX 40
    (["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], (12, 0), False),  # cu126 on an RTX 50
    (["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"], (6, 1), False),
    (["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"], (12, 1), True),
    (["sm_75", "sm_80", "sm_90", "compute_90"], (10, 0), True),                        # PTX JIT
])
def test_kernel_coverage(archs, cc, ok):
    assert system._has_kernels(archs, cc) is ok


def _import_path_of_this_run() -> str:
    """The lora_studio under test (a checkout, not whatever copy is installed) and this environment's libraries.

    A --system-site-packages venv made from inside a venv sees the base Python's site-packages, not the outer
    venv's: without these the child finds neither the app nor torch when the tests run in a virtual environment.
    """
    import site

    import lora_studio

    dirs = [str(Path(lora_studio.__file__).resolve().parents[1]), *site.getsitepackages()]
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    return os.pathsep.join(dirs)


@pytest.mark.skipif(sys.platform.startswith("win"), reason="the venv's interpreter is bin/python here")
def test_the_app_finds_only_its_own_environments_record(tmp_path):
    prefix = tmp_path / "prefix"
    env = prefix / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(env)], check=True)
    child_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": _import_path_of_this_run()}

    def ask(code="print(s.find_install_record())"):
        out = subprocess.run([str(env / "bin" / "python"), "-c", "from lora_studio.core import system as s; " + code],
                             capture_output=True, text=True, cwd=tmp_path, check=True, env=child_env)
        return out.stdout.strip()

    assert Path(ask("import lora_studio; print(lora_studio.__file__)")).resolve() == \
        Path(system.__file__).resolve().parents[1] / "__init__.py"  # the code under test, not an installed copy

    assert ask() == "None"
    record(prefix, build="cpu", device="cpu", env=str(tmp_path / "elsewhere" / "env"))
    assert ask() == "None"  # a record of another environment is not ours
    record(prefix, build="cpu", device="cpu", env=str(env))
    assert ask("print(s.find_install_record()); print(s.torch_check().expected)").split() == [
        str(prefix / "install.json"), "cpu"]


def test_allocator_defaults_leave_a_users_setting_alone():
    env = {}
    system.allocator_defaults(env)
    assert env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    for key in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"):
        env = {key: "backend:cudaMallocAsync"}
        system.allocator_defaults(env)
        assert env == {key: "backend:cudaMallocAsync"}


@pytest.mark.parametrize("platform,env,expected", [
    ("linux", {"HOME": "/home/ann"}, "/home/ann/.cache/lora-studio/torchinductor"),
    ("linux", {"HOME": "/home/ann", "XDG_CACHE_HOME": "/data/cache"}, "/data/cache/lora-studio/torchinductor"),
    ("darwin", {"HOME": "/Users/ann"}, "/Users/ann/Library/Caches/lora-studio/torchinductor"),
    ("win32", {"USERPROFILE": "C:/Users/ann", "LOCALAPPDATA": "D:/Local"}, "D:/Local/lora-studio/torchinductor"),
])
def test_the_compile_cache_lives_in_the_users_cache_folder(platform, env, expected):
    system.compile_cache_defaults(env, platform, create=False)
    assert Path(env["TORCHINDUCTOR_CACHE_DIR"]) == Path(expected)
    mine = {"HOME": "/home/ann", "TORCHINDUCTOR_CACHE_DIR": "/fast/disk"}
    system.compile_cache_defaults(mine, platform, create=False)
    assert mine["TORCHINDUCTOR_CACHE_DIR"] == "/fast/disk"


def test_the_compile_cache_folder_is_made_or_left_to_torch(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    system.compile_cache_defaults(env, "linux")
    assert Path(env["TORCHINDUCTOR_CACHE_DIR"]).is_dir()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(blocked)}  # cannot be made: torch's default stays
    system.compile_cache_defaults(env, "linux")
    assert "TORCHINDUCTOR_CACHE_DIR" not in env
