"""Can the app's window open here? Qt's X11 platform plugin (libqxcb.so) and the system libraries it needs.

PySide6's wheels carry Qt but not the X11 helper libraries; on a minimal Debian libxcb-icccm4 and
libxcb-keysyms1 are missing and Qt aborts at start (exit 134) blaming xcb-cursor0 and suggesting a reinstall.
This finds what is really missing (``ldd`` on the plugin), names the distribution packages that provide it,
and tries the plugin for real in a child process (a crash there cannot take the caller with it).

Standard library only: the installer runs it with the app environment's Python before the app ever starts,
and the launcher runs it after a failed start to say what to install.

    python -m lora_studio.qt_check [--text | --shell | --json]     # exit status 0: the window can open
    python -m lora_studio.qt_check --install    # the installer: apt-get what is missing (as root, or via sudo)
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

# soname -> (Debian/Ubuntu package, Fedora/RHEL package): what Qt 6's xcb plugin links against, from the
# Qt for X11 requirements page and the `ldd` of PySide6 6.x's libqxcb.so.
PACKAGES = {
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
}
MANAGERS = {"apt": ("apt-get", 0), "dnf": ("dnf", 1)}  # tool on PATH, column of PACKAGES
# A Qt that failed only because no display is reachable has loaded its plugin: the libraries are there.
NO_DISPLAY = re.compile(r"could not connect to display|no display|cannot open display", re.I)


@dataclass
class QtCheck:
    ok: bool
    missing: list[str] = field(default_factory=list)    # sonames ldd could not find
    packages: list[str] = field(default_factory=list)   # what provides them, for ``manager``
    manager: str = ""                                    # apt, dnf or "" (unknown)
    detail: str = ""                                     # Qt's own words when the plugin did not load

    @property
    def install_command(self) -> str:
        if not self.packages or not self.manager:
            return ""
        sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
        return f"{sudo}{MANAGERS[self.manager][0]} install -y " + " ".join(self.packages)

    def text(self) -> str:
        if self.ok:
            return "The app's window can open here (Qt's platform plugin loads)."
        lines = ["The app's window cannot open: Qt's X11 platform plugin (xcb) does not load."]
        if self.missing:
            lines.append("Missing system libraries: " + ", ".join(self.missing) + ".")
            unknown = [s for s in self.missing if s not in PACKAGES or not self.install_command]
            if self.install_command:
                lines.append(f"Install them with: {self.install_command}")
            if unknown:
                lines.append("Install the packages of your distribution that provide " + ", ".join(unknown) + ".")
        elif self.detail:
            said = [line for line in self.detail.splitlines() if line.strip()]
            lines.append("Qt said: " + next((line for line in said if "Could not" in line), said[0])[:300])
        lines.append("The command-line tools (lora-studio train, demo, generate, ...) work without it.")
        return "\n".join(lines)


def missing_libraries(ldd_output: str) -> list[str]:
    """The sonames ``ldd`` reports as "not found", once each, in the order it lists them."""
    found = re.findall(r"^\s*(\S+)\s+=>\s+not found\s*$", ldd_output, flags=re.M)
    return list(dict.fromkeys(found))


def package_manager(which=shutil.which) -> str:
    return next((name for name, (tool, _) in MANAGERS.items() if which(tool)), "")


def packages_for(sonames: list[str], manager: str) -> list[str]:
    """Distribution packages for ``sonames`` (those the table does not know are left to the user's search)."""
    if manager not in MANAGERS:
        return []
    column = MANAGERS[manager][1]
    return list(dict.fromkeys(PACKAGES[s][column] for s in sonames if s in PACKAGES))


def xcb_plugin() -> Path | None:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return path if path.is_file() else None


def ldd(path: Path) -> str:
    if not shutil.which("ldd"):
        return ""
    try:
        return subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


PROBE = "from PySide6.QtGui import QGuiApplication; app = QGuiApplication(['lora-studio-check'])"


def try_plugin(python: str = sys.executable) -> tuple[bool, str]:
    """Create a QGuiApplication on the xcb plugin in a child process: (loaded, Qt's output)."""
    env = dict(os.environ, QT_QPA_PLATFORM="xcb")
    env.pop("QT_DEBUG_PLUGINS", None)
    try:
        proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    output = proc.stdout + proc.stderr
    return proc.returncode == 0 or bool(NO_DISPLAY.search(output)), output


def check(python: str = sys.executable) -> QtCheck:
    if not sys.platform.startswith("linux"):
        return QtCheck(ok=True)  # Windows and macOS wheels carry their platform plugins whole
    plugin = xcb_plugin()
    if plugin is None:
        return QtCheck(ok=False, detail="PySide6 (Qt) is not installed in this environment; run the installer again.")
    missing = missing_libraries(ldd(plugin))
    loaded, output = try_plugin(python)
    manager = package_manager()
    return QtCheck(ok=loaded and not missing, missing=missing, packages=packages_for(missing, manager),
                   manager=manager, detail="" if loaded else output)


def _as_root(which=shutil.which, interactive: bool = False) -> list[str] | None:
    """How to run a command as root: as it is, through sudo (asking for a password only when interactive), or
    not at all (None)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return []
    if not which("sudo"):
        return None
    if subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return ["sudo"] if interactive else None


def install_missing(result: QtCheck, mode: str = "ask", python: str = sys.executable,
                    interactive: bool | None = None, ask=input) -> QtCheck:
    """Install what ``result`` names with apt when that can be done: ``mode`` "yes", "no" or "ask" (the
    installer's LORA_STUDIO_SYSTEM_PACKAGES; "ask" asks on a terminal, and installs as root without asking)."""
    if result.ok or not result.packages or result.manager != "apt" or mode == "no":
        return result
    interactive = sys.stdin.isatty() if interactive is None else interactive
    root = _as_root(interactive=interactive or mode == "yes")
    if root is None:
        return result
    if root and mode == "ask":
        if not interactive:
            return result
        answer = ask(f"Qt's window needs {' '.join(result.packages)}. Install them now with sudo apt-get? [Y/n] ")
        if answer.strip().lower() not in ("", "y", "yes"):
            return result
    install = [*root, "apt-get", "install", "-y", "--no-install-recommends", *result.packages]
    print("installing: " + " ".join(install), flush=True)
    if subprocess.run(install).returncode != 0:  # a fresh image has no package lists yet
        subprocess.run([*root, "apt-get", "update"])
        subprocess.run(install)
    return check(python)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    result = check()
    if "--install" in args:
        result = install_missing(result, os.environ.get("LORA_STUDIO_SYSTEM_PACKAGES", "ask"))
    if "--json" in args:
        print(json.dumps({**asdict(result), "install_command": result.install_command}, indent=2))
    elif "--shell" in args:
        values = {"QT_OK": "1" if result.ok else "0", "QT_MISSING": " ".join(result.missing),
                  "QT_PACKAGES": " ".join(result.packages), "QT_MANAGER": result.manager,
                  "QT_INSTALL_COMMAND": result.install_command}
        print("\n".join(f"{k}={shlex.quote(v)}" for k, v in values.items()))
    else:
        print(result.text())
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
