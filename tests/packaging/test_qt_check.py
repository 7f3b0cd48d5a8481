"""Qt's X11 platform plugin: what the installer and the launcher say when it cannot load (a minimal Debian
misses libxcb-icccm4 and libxcb-keysyms1, and Qt aborts with exit 134 blaming xcb-cursor0)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from lora_studio import qt_check

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb plugin is Linux's")

# `ldd libqxcb.so` of PySide6 6.12 on Debian 12 without the two packages (trimmed)
LDD = """\
\tlinux-vdso.so.1 (0x00007f63a1232000)
\tlibQt6XcbQpa.so.6 => /env/site-packages/PySide6/Qt/plugins/platforms/../../lib/libQt6XcbQpa.so.6 (0x00007f63a1164000)
\tlibxkbcommon-x11.so.0 => /lib/x86_64-linux-gnu/libxkbcommon-x11.so.0 (0x00007f63a114e000)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f63a1147000)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-util.so.1 => /lib/x86_64-linux-gnu/libxcb-util.so.1 (0x00007f63a113f000)
\tlibxcb-keysyms.so.1 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f639f41e000)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibfrobnicate.so.2 => not found
\t/lib64/ld-linux-x86-64.so.2 (0x00007f63a1234000)
"""
QT_ABORT = ('qt.qpa.plugin: From 6.5.0, xcb-cursor0 or libxcb-cursor0 is needed to load the Qt xcb platform plugin.\n'
            'qt.qpa.plugin: Could not load the Qt platform plugin "xcb" in "" even though it was found.\n'
            'This application failed to start because no Qt platform plugin could be initialized. '
            'Reinstalling the application may fix this problem.\n')


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_ldd_output_names_each_missing_library_once():
    assert qt_check.missing_libraries(LDD) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libfrobnicate.so.2"]
    assert qt_check.missing_libraries("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n") == []


def test_missing_libraries_become_the_packages_to_install():
    missing = qt_check.missing_libraries(LDD)
    assert qt_check.packages_for(missing, "apt") == ["libxcb-icccm4", "libxcb-keysyms1"]
    assert qt_check.packages_for(missing, "dnf") == ["xcb-util-wm", "xcb-util-keysyms"]
    assert qt_check.packages_for(missing, "") == []
    result = qt_check.QtCheck(ok=False, missing=missing, packages=qt_check.packages_for(missing, "apt"), manager="apt")
    text = result.text()
    assert "apt-get install -y libxcb-icccm4 libxcb-keysyms1" in result.install_command
    assert result.install_command in text and "libfrobnicate.so.2" in text.splitlines()[-2]
    assert "Reinstalling" not in text and "xcb-cursor0" not in text  # not Qt's misleading advice


@pytest.mark.parametrize("output, status, loads", [
    ("", 0, True),
    ("qt.qpa.xcb: could not connect to display \nqt.qpa.plugin: Could not load the Qt platform plugin", 134, True),
    (QT_ABORT, 134, False),
])
def test_the_plugin_is_tried_in_a_child_process(tmp_path, output, status, loads):
    (tmp_path / "out.txt").write_text(output)
    fake_python = script(tmp_path / "python", f'cat "{tmp_path}/out.txt" >&2; exit {status}')
    loaded, said = qt_check.try_plugin(str(fake_python))
    assert loaded is loads and said == output


def test_the_check_on_this_machine_agrees_with_ldd():
    plugin = qt_check.xcb_plugin()
    if plugin is None or not qt_check.ldd(plugin):
        pytest.skip("no PySide6 xcb plugin or no ldd here")
    result = qt_check.check()
    assert result.missing == qt_check.missing_libraries(qt_check.ldd(plugin))
    if result.missing:
        assert not result.ok and "Missing system libraries" in result.text()


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    """apt-get that fails until `apt-get update` ran (a fresh image has no package lists), and a sudo that
    runs the command: what is asked of them lands in calls.txt."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    script(bin_dir / "apt-get", f'echo "apt-get $*" >> "{calls}"\n'
                                f'[ "$1" = update ] && touch "{tmp_path}/lists"\n[ -e "{tmp_path}/lists" ]')
    script(bin_dir / "sudo", f'[ "$1" = -n ] && shift\n[ "$1" = true ] && exit 0\necho "sudo" >> "{calls}"\nexec "$@"')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


MISSING = qt_check.QtCheck(ok=False, missing=["libxcb-icccm.so.4"], packages=["libxcb-icccm4"], manager="apt")


def test_the_installer_apt_gets_what_is_missing(fake_apt):
    qt_check.install_missing(MISSING, mode="yes", interactive=False)
    lines = [line for line in fake_apt.read_text().splitlines() if line != "sudo"]
    install = "apt-get install -y --no-install-recommends libxcb-icccm4"
    assert lines == [install, "apt-get update", install]


@pytest.mark.parametrize("mode, interactive", [("no", True), ("ask", False)])
def test_the_installer_only_names_them_when_told_not_to_or_it_cannot_ask(fake_apt, mode, interactive):
    if mode == "ask" and os.geteuid() == 0:
        pytest.skip("as root 'ask' installs without asking")
    result = qt_check.install_missing(MISSING, mode=mode, interactive=interactive, ask=lambda prompt: "y")
    assert result is MISSING and not fake_apt.exists()


def test_the_app_names_the_missing_libraries_instead_of_aborting():
    import subprocess

    plugin = qt_check.xcb_plugin()
    missing = qt_check.missing_libraries(qt_check.ldd(plugin)) if plugin else []
    if not missing:
        pytest.skip("Qt's X11 plugin has all its libraries here")
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = ":99"  # Qt would pick its X11 plugin (and abort, status 134, before reaching the display)
    out = subprocess.run([sys.executable, "-m", "lora_studio", "gui"], capture_output=True, text=True, env=env)
    assert out.returncode == 1, out.stderr[-2000:]
    assert all(name in out.stderr for name in missing) and "what to do:" in out.stderr
    assert "Reinstalling" not in out.stderr and "Traceback" not in out.stderr


def test_offscreen_and_wayland_are_not_held_back():
    from lora_studio.commands.gui import window_can_open

    window_can_open({"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":99"})
    window_can_open({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":99"})
