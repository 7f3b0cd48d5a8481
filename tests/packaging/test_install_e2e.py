"""The real thing: `bash packaging/linux/install.sh` into a fresh HOME on this machine (no GPU -> CPU torch),
then the app runs (GUI offscreen, the demo), a second run changes nothing, an interrupted run is repaired,
--uninstall cleans up. The first install is `pip install dist/<wheel>` into a clean environment (the
installer's --wheel route, through uv's pip); the interrupted one builds the wheel from the source tree.

Packages come from uv's cache (UV_CACHE_DIR, else ~/.cache/uv) and the local wheel folder pip is configured
with; a cold cache downloads them from PyPI once. The tests share one install and run in file order.
"""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from install_helpers import build_wheel, copy_source_tree, path_without_nvidia_smi, tree_snapshot

pytestmark = pytest.mark.slow
NOT_BUILT = "is not built yet"


def installer_env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORA_STUDIO_", "XDG_", "VIRTUAL_ENV"))}
    # LORA_STUDIO_SYSTEM_PACKAGES=no: a test never apt-gets Qt's X11 libraries onto the machine, it only names them
    env.update(HOME=str(home), PATH=path_without_nvidia_smi(), QT_QPA_PLATFORM="offscreen",
               LORA_STUDIO_SYSTEM_PACKAGES="no",
               UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache" / "uv"), **extra)
    rustup = Path.home() / ".rustup"
    if rustup.is_dir():  # pip asks rustc for its version; rustup would create ~/.rustup in the fake HOME
        env["RUSTUP_HOME"] = str(rustup)
    return env


def run_installer(src: Path, home: Path, *args, timeout=400, **extra):
    t0 = time.monotonic()
    out = subprocess.run(["bash", str(src / "packaging" / "linux" / "install.sh"), *args],
                         env=installer_env(home, **extra),
                         capture_output=True, text=True, timeout=timeout, cwd=home)
    print(f"install.sh {' '.join(args)}: {time.monotonic() - t0:.1f} s\n{out.stdout}\n{out.stderr}")
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def pypi_reachable() -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request("https://pypi.org/simple/uv/", method="HEAD"), timeout=10)
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if not pypi_reachable():
        pytest.skip("the installer fetches uv and the app's libraries from PyPI, which is unreachable here")
    root = tmp_path_factory.mktemp("install")
    src = copy_source_tree(root / "src")  # frozen: others may edit the working tree meanwhile
    home = root / "home"
    home.mkdir()
    wheel = build_wheel(root / "dist", src)  # `pip install dist/<wheel>` into a clean environment is this route
    return {"root": root, "src": src, "home": home, "wheel": wheel}


@pytest.fixture(scope="module")
def installed(world):
    out = run_installer(world["src"], world["home"], "--wheel", str(world["wheel"]))
    return {**world, "out": out, "prefix": world["home"] / ".local/share/lora-studio",
            "launcher": world["home"] / ".local/bin/lora-studio"}


@pytest.fixture(scope="module")
def uv_binary(installed):
    """The uv the first install fetched from PyPI, kept aside so later tests need not download it again."""
    keep = installed["root"] / "uvbin" / "uv"
    keep.parent.mkdir(exist_ok=True)
    fetched = installed["prefix"] / "tools/bin/uv"
    if not keep.exists():
        shutil.copy2(fetched if fetched.exists() else shutil.which("uv"), keep)  # else uv was on PATH already
    return keep


def app(inst, *args, timeout=300):
    return subprocess.run([str(inst["launcher"]), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=inst["root"], env=installer_env(inst["home"]))


def test_fresh_install_gives_a_working_command_and_desktop_entry(installed):
    prefix, home = installed["prefix"], installed["home"]
    assert not (prefix / ".install-incomplete").exists()
    rec = json.loads((prefix / "install.json").read_text())
    assert (rec["build"], rec["device"]) == ("cpu", "cpu") and rec["torch_version"].endswith("+cpu")
    assert "runs on the CPU, as the installer chose (cpu)" in installed["out"]
    out = app(installed, "--version")
    assert out.returncode == 0 and out.stdout.startswith("lora-studio ")
    desktop = (home / ".local/share/applications/lora-studio.desktop").read_text()
    assert f'Exec=env LORA_STUDIO_FROM_MENU=1 "{installed["launcher"]}" gui' in desktop
    assert "Checking that the app's window can open" in installed["out"]
    icon = home / ".local/share/icons/hicolor/scalable/apps/lora-studio.svg"
    assert f"Icon={icon}" in desktop and "<svg" in icon.read_text()
    # the app-local environment has its own torch (CPU build), not this test process's
    out = subprocess.run([str(prefix / "env/bin/python"), "-I", "-c",
                          "import torch, lora_studio; print(torch.__file__); print(lora_studio.__file__)"],
                         capture_output=True, text=True, check=True, cwd=installed["root"])
    assert all(line.startswith(str(prefix / "env")) for line in out.stdout.split())


def test_installed_app_opens_the_gui_offscreen(installed):
    shot = installed["root"] / "shot.png"
    out = app(installed, "gui", "--screenshot", str(shot), "--tab", "training")
    if NOT_BUILT in out.stderr:
        pytest.skip(out.stderr.strip())
    assert out.returncode == 0, out.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_installed_app_runs_the_demo(installed):
    demo = installed["root"] / "demo"
    out = app(installed, "demo", "--out", str(demo), timeout=900)
    if NOT_BUILT in out.stderr:
        pytest.skip(out.stderr.strip())
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(demo.rglob("*.safetensors")), sorted(p.name for p in demo.rglob("*"))


def test_second_run_changes_nothing(installed):
    home = installed["home"]
    skip = (".local/share/lora-studio/cache",)
    before = tree_snapshot(home, skip)
    out = run_installer(installed["src"], home, "--wheel", str(installed["wheel"]))
    assert "Installing" not in out and "Creating" not in out
    after = tree_snapshot(home, skip)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, sorted(changed)[:20]


def test_interrupted_install_is_repaired_by_rerunning(installed, uv_binary, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = installer_env(home, LORA_STUDIO_UV=str(uv_binary))
    # this one builds the wheel from the source tree, the other route of install.sh
    proc = subprocess.Popen(["bash", str(installed["src"] / "packaging/linux/install.sh")], env=env, cwd=home,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "Installing LoRA Studio and its libraries" in line:
            time.sleep(0.2)  # let uv get under way (installing takes seconds even when warm), then pull the plug
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    prefix = home / ".local/share/lora-studio"
    assert (prefix / ".install-incomplete").exists() and not (home / ".local/bin/lora-studio").exists()

    out = run_installer(installed["src"], home, LORA_STUDIO_UV=str(uv_binary))
    assert "An earlier install was interrupted" in out and "Building the LoRA Studio wheel" in out
    assert not (prefix / ".install-incomplete").exists()
    check = subprocess.run([str(home / ".local/bin/lora-studio"), "inspect", "--help"], capture_output=True,
                           text=True, timeout=120, cwd=tmp_path)
    assert check.returncode == 0 and "usage: lora-studio inspect" in check.stdout

    # a changed torch build (new driver or GPU) rebuilds the environment; here "cu126" is forced onto the
    # local CPU wheel, which the installer's closing start-up check must then report
    from lora_studio.install_plan import find_links_dirs, local_cpu_torch_wheel

    cpu_wheel = local_cpu_torch_wheel(find_links_dirs())
    if cpu_wheel:
        out = run_installer(installed["src"], home, "--wheel", str(installed["wheel"]), LORA_STUDIO_UV=str(uv_binary),
                            LORA_STUDIO_TORCH_BUILD="cu126", LORA_STUDIO_TORCH_INDEX="default",
                            LORA_STUDIO_TORCH_SPEC=cpu_wheel)
        assert "The torch build changes from cpu to cu126: rebuilding the environment" in out
        assert "is a CPU build, but the installer chose cu126" in out and "what to do:" in out

    # --uninstall leaves nothing behind in this HOME (the app itself never ran here)
    run_installer(installed["src"], home, "--uninstall")
    assert tree_snapshot(home) == {}


def test_uninstall_removes_everything_the_installer_made(installed):
    home, prefix = installed["home"], installed["prefix"]
    made = [prefix, installed["launcher"], home / ".local/share/applications/lora-studio.desktop",
            home / ".local/share/icons/hicolor/scalable/apps/lora-studio.svg"]
    out = run_installer(installed["src"], home, "--uninstall")
    assert "LoRA Studio is uninstalled" in out
    assert [p for p in made if p.exists()] == []
    left = [k for k in tree_snapshot(home) if k.startswith(".local")]
    assert left == [], left  # what remains (if anything) is the app's own settings from the runs above
    again = run_installer(installed["src"], home, "--uninstall")
    assert "uninstalled" in again
