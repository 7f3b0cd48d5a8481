"""The Windows installer's Triton step: triton_windows.py picks the triton-windows matched to the installed torch
(CUDA builds only, unknown torch -> nothing), bootstrap.ps1 runs it and treats a failed install as a note, and
the setup ships it next to the bootstrap."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest
from install_helpers import REPO

WINDOWS = REPO / "packaging" / "windows"


def _module():
    spec = importlib.util.spec_from_file_location("triton_windows", WINDOWS / "triton_windows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tw = _module()


@pytest.mark.parametrize("torch_version, triton", [
    ("2.6.0+cu126", "3.2"), ("2.7.1+cu128", "3.3"), ("2.8.0+cu126", "3.4"), ("2.9.1+cu130", "3.5"),
    ("2.10.0+cu130", "3.6"), ("2.11.0+cu130", "3.6"), ("2.12.0+cu126", "3.7"), ("2.13.0+cu130", "3.7"),
])
def test_each_torch_minor_gets_its_triton_minor(torch_version, triton):
    requirement, reason = tw.choose(torch_version, torch_version.split("+")[1])
    major, minor = triton.split(".")
    assert requirement == f"triton-windows>={triton},<{major}.{int(minor) + 1}"
    assert triton in reason


def test_every_torch_minor_the_installer_may_pick_is_in_the_table():
    assert set(tw.TRITON_FOR_TORCH) == {(2, m) for m in range(6, 14)}


@pytest.mark.parametrize("torch_version, build, says", [
    ("2.13.0+cpu", "cpu", "not CUDA"),
    ("2.13.0", "mps", "not CUDA"),
    ("2.7.1+cu118", "cu118", "CUDA 12 or newer"),
    ("2.15.0+cu130", "cu130", "no known triton-windows for torch 2.15"),
    ("2.5.1+cu124", "cu124", "no known triton-windows for torch 2.5"),
    ("", "cu130", "cannot read the torch version"),
])
def test_no_match_means_install_nothing_and_say_why(torch_version, build, says):
    requirement, reason = tw.choose(torch_version, build)
    assert requirement is None and says in reason


def test_script_prints_json_and_never_fails():
    for args in (["2.12.0+cu126", "cu126"], ["9.9.9", "cu130"], []):
        out = subprocess.run([sys.executable, str(WINDOWS / "triton_windows.py"), *args], capture_output=True,
                             text=True, check=True)
        assert set(json.loads(out.stdout)) == {"requirement", "reason"}
    assert json.loads(out.stdout)["requirement"] is None


def test_bootstrap_installs_the_choice_after_torch_and_never_fails_on_it():
    ps1 = (WINDOWS / "bootstrap.ps1").read_text()
    call = ps1.index('triton_windows.py") $torchVersion $Plan.build')
    assert ps1.index("Installing torch") < ps1.index("Installing LoRA Studio and its libraries") < call
    step = ps1[call:ps1.index("Adding the Start-menu shortcut")]
    assert "$tw.requirement" in step and "Invoke-Checked" not in step and "Fail " not in step  # optional
    assert re.search(r"catch \{ \$twOk = \$false \}\s*if \(-not \$twOk\) \{\s*Write-Host \"note:", step)  # a note
    # the last check says which kernel path training gets
    assert ps1.index("torch_check()") < ps1.index("-m lora_studio.core.accel.triton_check")


def test_inno_setup_ships_the_chooser_next_to_the_bootstrap():
    iss = (WINDOWS / "lora-studio.iss").read_text()
    assert 'Source: "triton_windows.py"; DestDir: "{app}\\setup"' in iss
