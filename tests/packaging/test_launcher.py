"""The `lora-studio` command the installer writes: from a terminal it is the app; from the applications menu
(Terminal=false, nobody reads stderr) a failed start shows a dialog, or at least a notification naming the log."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.install_plan import launcher_script

pytestmark = pytest.mark.skipif(sys.platform.startswith("win"), reason="a POSIX shell script")

HINT = "Missing system libraries: libxcb-icccm.so.4.\nInstall them with: sudo apt-get install -y libxcb-icccm4"
QT_ABORT = 'qt.qpa.plugin: Could not load the Qt platform plugin "xcb" in "" even though it was found.'


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def world(tmp_path):
    """A launcher for a fake app (exits with $APP_STATUS after Qt's abort message) and a PATH with only the
    tools the launcher needs, plus whichever dialog tools a test adds (each logs its arguments)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mkdir", "tail", "cat"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    app = script(tmp_path / "env" / "bin" / "lora-studio",
                 f'echo "args: $*"; echo \'{QT_ABORT}\' >&2; exit "${{APP_STATUS:-134}}"')
    python = script(tmp_path / "env" / "bin" / "python",  # stands in for `python -m lora_studio.qt_check --text`
                    f'[ "$*" = "-I -m lora_studio.qt_check --text" ] || exit 3\nprintf \'%s\\n\' "{HINT}"; exit 1')
    launcher = tmp_path / "lora-studio"
    launcher.write_text(launcher_script(str(app), str(python), str(tmp_path), "made by the test"))
    launcher.chmod(0o755)
    calls = tmp_path / "calls.txt"

    def add_tool(name: str, status: int = 0) -> None:
        reads_text = f'cat >> "{calls}"; ' if name == "xmessage" else ""  # `xmessage -file -` reads stdin
        script(bin_dir / name,
               f'{{ echo "{name}"; for a in "$@"; do echo "$a"; done; }} >> "{calls}"; {reads_text}exit {status}')

    def run(*args, from_menu=True, status=134):
        env = {"PATH": str(bin_dir), "HOME": str(tmp_path / "home"), "APP_STATUS": str(status)}
        if from_menu:
            env["LORA_STUDIO_FROM_MENU"] = "1"
        return subprocess.run([str(launcher), *args], capture_output=True, text=True, env=env)

    return {"run": run, "add_tool": add_tool, "calls": calls, "log": tmp_path / "home/.local/state/lora-studio/last-start.log"}


def test_a_failed_start_from_the_menu_shows_a_dialog_with_the_fix(world):
    world["add_tool"]("zenity")
    world["add_tool"]("notify-send")
    out = world["run"]("gui")
    assert out.returncode == 134
    calls = world["calls"].read_text()
    assert calls.startswith("zenity\n--error") and "notify-send" not in calls
    assert "exit status 134" in calls and HINT in calls and QT_ABORT in calls and str(world["log"]) in calls
    assert world["log"].read_text() == f"args: gui\n{QT_ABORT}\n"


def test_without_a_dialog_tool_a_notification_names_the_log(world):
    world["add_tool"]("zenity", status=1)  # no display it can use
    world["add_tool"]("notify-send")
    out = world["run"]("gui")
    assert out.returncode == 134
    calls = world["calls"].read_text().split("notify-send\n", 1)
    assert calls[0].startswith("zenity") and f"Details: {world['log']}" in calls[1] and HINT in calls[1]


def test_xmessage_gets_the_text_when_it_is_the_one_there(world):
    world["add_tool"]("xmessage")
    world["run"]("gui")
    calls = world["calls"].read_text()
    assert calls.startswith("xmessage\n-center") and HINT in calls and str(world["log"]) in calls


def test_with_no_tool_at_all_the_text_still_goes_to_stderr(world):
    out = world["run"]("gui")
    assert out.returncode == 134 and HINT in out.stderr and str(world["log"]) in out.stderr


@pytest.mark.parametrize("status", [0, 143])
def test_a_normal_end_or_logout_shows_nothing(world, status):
    world["add_tool"]("zenity")
    out = world["run"]("gui", status=status)
    assert out.returncode == status and not world["calls"].exists()


def test_from_a_terminal_it_is_the_app_itself(world):
    world["add_tool"]("zenity")
    out = world["run"]("train", "a b.toml", from_menu=False, status=1)
    assert out.returncode == 1 and out.stdout == "args: train a b.toml\n" and QT_ABORT in out.stderr
    assert not world["calls"].exists() and not world["log"].exists()
