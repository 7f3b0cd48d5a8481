"""The wheel carries resources/ (icons, model configs, the demo model and datasets) as lora_studio/resources,
and an installed (non-editable) copy finds them through lora_studio.paths."""

import subprocess
import sys
import zipfile

from install_helpers import REPO


def _shipped_resources() -> set[str]:
    return {p.relative_to(REPO / "resources").as_posix() for p in (REPO / "resources").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_wheel_carries_every_resource(built_wheel):
    names = set(zipfile.ZipFile(built_wheel).namelist())
    in_wheel = {n.removeprefix("lora_studio/resources/") for n in names if n.startswith("lora_studio/resources/")}
    expected = _shipped_resources()
    assert expected, "resources/ is empty: nothing to check"
    assert expected - in_wheel == set(), f"missing from the wheel: {sorted(expected - in_wheel)[:10]}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "lora_studio/install_plan.py" in names and "lora_studio/cli.py" in names


def test_installed_wheel_finds_resources(built_wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site),
                    str(built_wheel)], check=True)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from lora_studio.paths import resources_dir;"
            "d = resources_dir(); print(d); print(sum(1 for p in d.rglob('*') if p.is_file()))")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(site)], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == str(site / "lora_studio" / "resources")
    assert int(out[1]) == len(_shipped_resources())
