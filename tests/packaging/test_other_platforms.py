"""What can be checked here of the Windows and macOS installers, which cannot run on this machine: they
delegate the torch decision to install_plan.py and ship the wheel of the current version."""

import re
import subprocess

from install_helpers import REPO

import lora_studio

WINDOWS = REPO / "packaging" / "windows"


def test_inno_setup_ships_the_current_wheel_and_the_bootstrap():
    iss = (WINDOWS / "lora-studio.iss").read_text()
    assert re.search(r'#define AppVersion "([^"]+)"', iss).group(1) == lora_studio.__version__
    assert 'Source: "bootstrap.ps1"' in iss
    assert "lora_studio-{#AppVersion}-py3-none-any.whl" in iss
    assert "-Uninstall" in iss and "PrivilegesRequired=lowest" in iss


def test_bootstrap_uses_the_shared_decision_code_and_record():
    ps1 = (WINDOWS / "bootstrap.ps1").read_text()
    assert "lora_studio.install_plan plan --json" in ps1 or "install_plan.py\") plan --json" in ps1
    assert "lora_studio.install_plan record" in ps1 and "torch_check()" in ps1
    for key in ("build", "reason", "torch_requirement", "index_url", "torch_wheel", "python", "warnings", "gpus"):
        assert f"$Plan.{key}" in ps1 or f"$Old.{key}" in ps1, key
    # every field the script reads exists in the plan
    from lora_studio.install_plan import Plan
    fields = set(Plan.__dataclass_fields__)
    assert set(re.findall(r"\$Plan\.(\w+)", ps1)) <= fields
    assert set(re.findall(r"\$Old\.(\w+)", ps1)) <= fields | {"app_hash"}


def test_macos_installer_refuses_other_systems():
    out = subprocess.run(["bash", str(REPO / "packaging" / "macos" / "install.sh"), "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode == 0:
        assert "torch build : mps" in out.stdout  # on an Apple-silicon Mac
    else:
        assert "this installer is for macOS" in out.stderr or "Apple silicon" in out.stderr
