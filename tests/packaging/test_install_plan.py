"""The GPU -> torch build decision that every installer runs (lora_studio/install_plan.py)."""

import zipfile

import pytest

from lora_studio import install_plan as ip


def plan(smi: str, system="Linux", env=None, wheels=()):
    return ip.make_plan(ip.parse_nvidia_smi(smi), system, "x86_64", env=env or {}, local_wheels=list(wheels))


@pytest.mark.parametrize("smi, build, requirement", [
    # Pascal on an old driver: only the CUDA 11.8 builds run there (torch <= 2.7)
    ("NVIDIA GeForce GTX 1080 Ti, 470.256.02, 6.1", "cu118", "torch>=2.4,<2.8"),
    # Pascal on a current driver: cu126 is the last build with sm_60 code; cu130 has none
    ("NVIDIA GeForce GTX 1060 6GB, 580.95.05, 6.1", "cu126", "torch>=2.6,<2.15"),
    ("NVIDIA GeForce RTX 3090, 550.54.14, 8.6", "cu126", "torch>=2.6,<2.15"),
    ("NVIDIA GeForce RTX 4070, 580.65.06, 8.9", "cu130", "torch>=2.9"),
    # Blackwell: cu128 on an R570 driver, cu130 on R580; never cu126 (no sm_120 code)
    ("NVIDIA GeForce RTX 5090, 575.64.03, 12.0", "cu128", "torch>=2.7,<2.12"),
    ("NVIDIA GeForce RTX 5060 Ti, 580.82.09, 12.0", "cu130", "torch>=2.9"),
    ("Tesla V100-SXM2-32GB, 580.95.05, 7.0", "cu126", "torch>=2.6,<2.15"),
    ("NVIDIA H100 80GB HBM3, 580.95.05, 9.0", "cu130", "torch>=2.9"),
])
def test_cuda_builds(smi, build, requirement):
    p = plan(smi)
    assert (p.build, p.device, p.torch_requirement) == (build, "cuda", requirement)
    assert p.index_url == f"https://download.pytorch.org/whl/{build}"
    assert p.warnings == []


def test_no_gpu_gets_the_cpu_index_not_pypi():
    p = plan("")
    assert (p.build, p.device, p.index_url) == ("cpu", "cpu", "https://download.pytorch.org/whl/cpu")
    assert "no NVIDIA GPU" in p.reason


@pytest.mark.parametrize("smi, need", [
    ("NVIDIA GeForce GTX 1070, 390.157", "450.80.02"),              # old driver, no compute_cap column
    ("NVIDIA GeForce RTX 5080, 565.57.01, 12.0", "570.26"),
])
def test_driver_too_old_falls_back_to_cpu_and_says_what_to_update(smi, need):
    p = plan(smi)
    assert p.build == "cpu" and p.device == "cpu"
    assert len(p.warnings) == 1 and "Update the driver" in p.warnings[0] and need in p.warnings[0]


def test_windows_has_its_own_driver_minimums():
    smi = "NVIDIA GeForce RTX 4090, 580.80, 8.9"  # >= 580.65.06 on Linux terms, below Windows' 580.88
    assert plan(smi, "Linux").build == "cu130"
    assert plan(smi, "Windows").build == "cu126"


def test_old_driver_without_compute_cap_uses_the_name():
    gpus = ip.parse_nvidia_smi('Field "compute_cap" is not a valid field to query.\n')
    assert gpus == []
    (gpu,) = ip.parse_nvidia_smi("NVIDIA GeForce GTX 1080, 470.256.02\n")
    assert gpu.compute_cap == (6, 1) and gpu.driver == "470.256.02"
    (unknown,) = ip.parse_nvidia_smi("Mystery Accelerator 9000, 535.10\n")
    p = ip.make_plan([unknown], "Linux", "x86_64", env={}, local_wheels=[])
    assert p.build == "cpu" and "LORA_STUDIO_TORCH_BUILD" in p.warnings[0]


def test_kepler_is_too_old():
    p = plan("NVIDIA GeForce GTX 780, 470.10, 3.5")
    assert p.build == "cpu" and "older than any GPU" in p.warnings[0]


def test_mixed_gpus_prefer_a_build_for_all_else_the_first():
    assert plan("NVIDIA GeForce RTX 3090, 580.95.05, 8.6\nNVIDIA GeForce GTX 1080, 580.95.05, 6.1").build == "cu126"
    p = plan("NVIDIA GeForce RTX 5090, 580.95.05, 12.0\nNVIDIA GeForce GTX 1080, 580.95.05, 6.1")
    assert p.build == "cu130" and "GTX 1080 will not be used" in p.warnings[0]


def test_apple_silicon_gets_pypi_torch_with_mps_and_intel_macs_are_refused():
    p = ip.make_plan([], "Darwin", "arm64", env={}, local_wheels=[])
    assert (p.build, p.device, p.index_url) == ("mps", "mps", "")
    with pytest.raises(SystemExit, match="Apple silicon"):
        ip.make_plan([], "Darwin", "x86_64", env={}, local_wheels=[])


def test_environment_overrides():
    p = plan("NVIDIA GeForce RTX 3090, 580.95.05, 8.6", env={"LORA_STUDIO_TORCH_BUILD": "cpu"})
    assert p.build == "cpu" and "LORA_STUDIO_TORCH_BUILD" in p.reason
    p = plan("", env={"LORA_STUDIO_TORCH_INDEX": "default", "LORA_STUDIO_TORCH_SPEC": "torch==2.13.0"})
    assert (p.index_url, p.torch_requirement) == ("", "torch==2.13.0")
    with pytest.raises(SystemExit, match="cu126"):
        plan("", env={"LORA_STUDIO_TORCH_BUILD": "cu999"})


def test_local_cpu_wheel_is_used_for_the_cpu_build_only(tmp_path):
    for name in ("torch-2.12.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.14.0+cpu-cp312-cp312-manylinux_2_28_x86_64.whl",   # another Python
                 "torch-2.14.0+cpu-cp311-cp311-manylinux_2_28_aarch64.whl",  # another CPU
                 "torch-2.14.0-cp311-cp311-manylinux_2_28_x86_64.whl"):       # a CUDA build
        (tmp_path / name).write_bytes(b"")
    newest = str(tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    assert ip.local_cpu_torch_wheel([str(tmp_path), "/no/such/dir"], (3, 11), "Linux", "x86_64") == newest
    found = ip.local_cpu_torch_wheel([f"file://{tmp_path}"], (3, 12), "Linux", "x86_64")
    assert found.endswith("cp312-manylinux_2_28_x86_64.whl")
    assert ip.local_cpu_torch_wheel([str(tmp_path)], (3, 11), "Windows", "AMD64") == ""
    if ip.sys.version_info[:2] == (3, 11) and ip.platform.machine() == "x86_64" and ip.platform.system() == "Linux":
        assert plan("", wheels=[str(tmp_path)]).torch_wheel == newest
    assert plan("NVIDIA GeForce RTX 3090, 580.95.05, 8.6", wheels=[str(tmp_path)]).torch_wheel == ""


def test_python_outside_the_builds_range_asks_uv_for_one():
    assert ip.choose_python((3, 13), current=(3, 14)) == "3.12"     # cu118 (torch <= 2.7) has no 3.14 wheels
    assert ip.choose_python((3, 15), current=(3, 10)) == "3.12"     # older than the app's requires-python
    assert ip.choose_python((3, 15), current=(3, 12)) == ip.sys.executable


def test_wheel_hash_ignores_zip_timestamps(tmp_path, built_wheel):
    rezipped = tmp_path / built_wheel.name
    with zipfile.ZipFile(built_wheel) as src, zipfile.ZipFile(rezipped, "w") as dst:
        for info in src.infolist():
            info.date_time = (2001, 2, 3, 4, 5, 6)
            dst.writestr(info, src.read(info.filename))
    assert ip.wheel_content_hash(str(rezipped)) == ip.wheel_content_hash(str(built_wheel))
    with zipfile.ZipFile(rezipped, "a") as zf:
        zf.writestr("lora_studio/extra.py", "x = 1\n")
    assert ip.wheel_content_hash(str(rezipped)) != ip.wheel_content_hash(str(built_wheel))
