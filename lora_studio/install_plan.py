"""Which torch build to install for this machine: nvidia-smi's report -> a CUDA build, Apple MPS, or CPU.

The installers (packaging/linux/install.sh, packaging/windows/bootstrap.ps1, packaging/macos/install.sh)
run this file with the system Python before the app exists, so it uses the standard library only and
also runs as a plain script or straight out of the wheel (``PYTHONPATH=app.whl python -m ...``).

    python install_plan.py plan [--json | --shell | --text]   # detect and decide
    python install_plan.py record PLAN.json KEY=VALUE...      # the install record the app checks
    python install_plan.py wheel-hash APP.whl                 # content hash, blind to zip timestamps
    python install_plan.py launcher APP PYTHON PREFIX TAG     # the `lora-studio` command's script

Sources for the table (PyTorch RELEASE.md "CUDA Support Matrix", CUDA toolkit release notes):
cu126 is the last build with Maxwell/Pascal/Volta SASS and is dropped in torch 2.15; cu128 builds
(torch 2.7-2.11) were the first with Blackwell (sm_100/sm_120); cu130 covers Turing..Blackwell and
needs an R580 driver; cu118 (torch <= 2.7) runs on drivers as old as R450 (CUDA 11 minor-version
compatibility). A GPU can run a build whose SASS has the same major and a lower-or-equal minor
compute capability (sm_86 code runs on an sm_89 RTX 40).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

TORCH_INDEX = "https://download.pytorch.org/whl/"
QUERY = ["--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"]
PYTHON_MIN = (3, 11)  # the app's requires-python


@dataclass(frozen=True)
class Build:
    tag: str                        # cu130, cu126, ... ; also the download.pytorch.org index name
    requirement: str                # torch versions that exist for this build and that the app supports
    sass: tuple[tuple[int, int], ...]
    driver_linux: tuple[int, ...]   # minimum NVIDIA driver
    driver_windows: tuple[int, ...]
    python_max: tuple[int, int] = (3, 15)


# Newest first; the first build that the driver and every GPU accept wins. cu126 before cu128: both
# run Turing..Hopper on an R525+ driver, and cu126 has newer torch releases.
CUDA_BUILDS = (
    Build("cu130", "torch>=2.9", ((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)), (580, 65, 6), (580, 88)),
    Build("cu126", "torch>=2.6,<2.15", ((5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (9, 0)),
          (525, 60, 13), (528, 33)),
    Build("cu128", "torch>=2.7,<2.12", ((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)), (570, 26), (570, 65),
          python_max=(3, 14)),
    Build("cu118", "torch>=2.4,<2.8", ((5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (9, 0)),
          (450, 80, 2), (452, 39), python_max=(3, 13)),
)

# Old drivers (before ~R510) cannot report compute_cap; these name patterns fill the gap.
NAME_TO_CC = (
    (r"RTX PRO \d+ Blackwell|RTX 50\d0|GB20\d", (12, 0)),
    (r"\bB[12]00\b|GB200", (10, 0)),
    (r"\bH100\b|\bH200\b|GH200|\bH800\b", (9, 0)),
    (r"RTX 40\d0|\bL4\b|\bL40S?\b|RTX \d+ Ada", (8, 9)),
    (r"RTX 30\d0|RTX A\d+|\bA(10|16|40)G?\b|\bA2\b", (8, 6)),
    (r"\bA(30|100|800)\b", (8, 0)),
    (r"RTX 20\d0|GTX 16\d0|TITAN RTX|Quadro RTX|\bT4\b|\bT(400|600|1000|1200)\b", (7, 5)),
    (r"TITAN V|V100|Quadro GV100", (7, 0)),
    (r"GTX 10\d0|TITAN Xp|TITAN X \(Pascal\)|Quadro P\d+|Tesla P(4|40)\b|GT 1030|MX[1-3]\d0", (6, 1)),
    (r"P100", (6, 0)),
    (r"GTX (9\d0|750)|Quadro M\d+|Tesla M|TITAN X\b|MX1[13]0", (5, 2)),
    (r"GTX (6\d0|7[0-46-9]\d)|Tesla K|Quadro K", (3, 5)),
)


@dataclass
class Gpu:
    name: str
    driver: str
    compute_cap: tuple[int, int] | None  # None: the driver did not say and the name is unknown


@dataclass
class Plan:
    system: str
    machine: str
    gpus: list[Gpu]
    build: str                      # cu130 / cu126 / cu128 / cu118 / cpu / mps
    device: str                     # cuda / cpu / mps
    index_url: str                  # "" = the installer tool's configured index (PyPI)
    torch_requirement: str
    python: str                     # interpreter path, or a version for uv to fetch
    reason: str
    warnings: list[str] = field(default_factory=list)
    torch_wheel: str = ""           # a local CPU torch wheel that saves the download (offline machines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def parse_compute_cap(text: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def cc_from_name(name: str) -> tuple[int, int] | None:
    for pattern, cc in NAME_TO_CC:
        if re.search(pattern, name, re.IGNORECASE):
            return cc
    return None


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Rows of ``name, driver_version[, compute_cap]`` (csv, noheader)."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.rsplit(",", 2)] if line.count(",") >= 2 else [
            p.strip() for p in line.rsplit(",", 1)]
        if len(parts) < 2 or not re.match(r"\d+\.\d+", parts[1]):
            continue  # an error line, not a GPU row
        cc = parse_compute_cap(parts[2]) if len(parts) > 2 else None
        gpus.append(Gpu(parts[0], parts[1], cc or cc_from_name(parts[0])))
    return gpus


def query_nvidia_smi(exe: str | None = None) -> tuple[list[Gpu], str]:
    """The GPUs nvidia-smi reports, and a note when it is present but fails (a driver problem)."""
    exe = exe or shutil.which("nvidia-smi")
    if not exe:
        return [], ""
    try:
        out = subprocess.run([exe, *QUERY], capture_output=True, text=True, timeout=30)
        if out.returncode != 0 and "compute_cap" in (out.stdout + out.stderr):
            # drivers before ~R510 do not know the compute_cap field: ask for the rest
            out = subprocess.run([exe, QUERY[0].replace(",compute_cap", ""), QUERY[1]],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"nvidia-smi could not run ({exc})"
    if out.returncode != 0:
        msg = (out.stderr or out.stdout).strip().splitlines()
        return [], f"nvidia-smi failed: {msg[0] if msg else 'exit ' + str(out.returncode)}"
    return parse_nvidia_smi(out.stdout), ""


def runs_on(build: Build, cc: tuple[int, int]) -> bool:
    return any(major == cc[0] and minor <= cc[1] for major, minor in build.sass)


def _driver_min(build: Build, system: str) -> tuple[int, ...]:
    return build.driver_windows if system == "Windows" else build.driver_linux


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(f"{p:02d}" if i == 2 else str(p) for i, p in enumerate(v))


def choose_cuda(gpus: list[Gpu], system: str) -> tuple[Build | None, str, list[str]]:
    """The CUDA build for these GPUs, or None with the reason and what to do."""
    warnings = []
    known = [g for g in gpus if g.compute_cap]
    if not known:
        return None, f"cannot tell the compute capability of {gpus[0].name}", [
            f"LoRA Studio could not tell which CUDA build suits '{gpus[0].name}', so it installs the CPU build. "
            "Update the NVIDIA driver (so nvidia-smi reports compute_cap) and run the installer again, or set "
            "LORA_STUDIO_TORCH_BUILD=cu126 (or cu130) to choose yourself."]
    driver = version_tuple(known[0].driver)
    for targets in (known, known[:1]):  # every GPU if possible, else the first (the one training uses)
        for build in CUDA_BUILDS:
            if driver >= _driver_min(build, system) and all(runs_on(build, g.compute_cap) for g in targets):
                if targets is not known:
                    skipped = ", ".join(g.name for g in known[1:] if not runs_on(build, g.compute_cap))
                    warnings.append(f"no single torch build supports all your GPUs; {skipped} will not be used.")
                cc = targets[0].compute_cap
                return build, (f"{targets[0].name} (sm_{cc[0]}{cc[1]}) with driver {known[0].driver} "
                               f"-> torch {build.tag}"), warnings
    first = known[0]
    if first.compute_cap < (5, 0):
        return None, f"{first.name} (sm_{first.compute_cap[0]}{first.compute_cap[1]}) is too old", [
            f"{first.name} is older than any GPU current PyTorch supports (Maxwell or newer is needed); "
            "LoRA Studio installs the CPU build, which trains slowly."]
    usable = [b for b in CUDA_BUILDS if runs_on(b, first.compute_cap)]
    need = min(_driver_min(b, system) for b in usable) if usable else None
    if need is None:
        return None, f"no torch build supports {first.name}", [
            f"no PyTorch CUDA build supports {first.name}; LoRA Studio installs the CPU build."]
    best = _driver_min(usable[0], system)
    return None, f"driver {first.driver} is too old for {first.name}", [
        f"the NVIDIA driver {first.driver} is too old for any PyTorch CUDA build, so LoRA Studio installs the "
        f"CPU build (slow). Update the driver to {_fmt(best)} or newer (at least {_fmt(need)}), then run the "
        "installer again: it switches to the GPU build."]


def local_cpu_torch_wheel(dirs: list[str], python: tuple[int, int] | None = None, system: str = "",
                          machine: str = "") -> str:
    """A CPU torch wheel for this Python in a local wheel folder (pip's find-links), newest first."""
    py = python or sys.version_info[:2]
    tag = f"cp{py[0]}{py[1]}"
    arch = (machine or platform.machine()).lower().replace("amd64", "x86_64")
    plat = {"Linux": "linux", "Windows": "win", "Darwin": "macosx"}.get(system or platform.system(), "?")
    found = []
    for d in dirs:
        path = Path(d.removeprefix("file://"))
        if not path.is_dir():
            continue
        for whl in path.glob("torch-*+cpu-*.whl"):
            name = whl.name.lower()
            if f"-{tag}-" in name and plat in name and (arch in name or plat == "macosx"):
                found.append((version_tuple(whl.name.split("-")[1].split("+")[0]), str(whl)))
    return max(found)[1] if found else ""


def find_links_dirs() -> list[str]:
    """Local wheel folders the user already configured for pip (find-links), plus LORA_STUDIO_FIND_LINKS."""
    dirs = [d for v in (os.environ.get("LORA_STUDIO_FIND_LINKS", ""), os.environ.get("PIP_FIND_LINKS", ""))
            for d in v.split()]
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=30, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            dirs += value.strip().strip("'\"").split()
    return [d for d in dirs if "://" not in d or d.startswith("file://")]


def choose_python(python_max: tuple[int, int], current: tuple[int, int] | None = None) -> str:
    """This interpreter if the app and the torch build both accept it, else a version for uv to fetch."""
    if PYTHON_MIN <= (current or sys.version_info[:2]) <= python_max:
        return sys.executable
    return "3.12"


def make_plan(gpus: list[Gpu], system: str, machine: str, smi_note: str = "",
              env: dict[str, str] | None = None, local_wheels: list[str] | None = None) -> Plan:
    env = dict(os.environ if env is None else env)
    warnings = [smi_note] if smi_note else []
    forced = env.get("LORA_STUDIO_TORCH_BUILD", "").strip().lower()
    build: Build | None = None
    if forced:
        build = next((b for b in CUDA_BUILDS if b.tag == forced), None)
        if build is None and forced not in ("cpu", "mps"):
            raise SystemExit(f"LORA_STUDIO_TORCH_BUILD={forced}: use one of cpu, mps, "
                             + ", ".join(b.tag for b in CUDA_BUILDS))
        tag, reason = (build.tag if build else forced), f"chosen by LORA_STUDIO_TORCH_BUILD={forced}"
    elif system == "Darwin":
        if machine != "arm64":
            raise SystemExit("LoRA Studio needs a Mac with Apple silicon (M1 or newer): current PyTorch "
                             "releases no longer support Intel Macs.")
        tag, reason = "mps", "Apple silicon -> torch from PyPI with the MPS backend"
    elif gpus:
        build, reason, more = choose_cuda(gpus, system)
        warnings += more
        tag = build.tag if build else "cpu"
    else:
        tag, reason = "cpu", ("nvidia-smi reported no usable GPU -> CPU build" if smi_note
                              else "no NVIDIA GPU found -> CPU build")

    if tag == "mps":
        index, requirement = "", "torch>=2.4"
    elif build:
        index, requirement = TORCH_INDEX + build.tag, build.requirement
    else:
        # On macOS PyPI's torch is the CPU/MPS one; elsewhere PyPI's torch is the CUDA build.
        index, requirement = ("" if system == "Darwin" else TORCH_INDEX + "cpu"), "torch>=2.4"
    device = {"cpu": "cpu", "mps": "mps"}.get(tag, "cuda")
    wheel = ""
    if device == "cpu" and "LORA_STUDIO_TORCH_INDEX" not in env:
        wheel = local_cpu_torch_wheel(find_links_dirs() if local_wheels is None else local_wheels)
    if "LORA_STUDIO_TORCH_INDEX" in env:
        index = "" if env["LORA_STUDIO_TORCH_INDEX"] in ("", "default", "pypi") else env["LORA_STUDIO_TORCH_INDEX"]
    requirement = env.get("LORA_STUDIO_TORCH_SPEC", requirement)
    python = choose_python(build.python_max if build else (3, 15))
    return Plan(system, machine, gpus, tag, device, index, requirement, python, reason, warnings, wheel)


def detect(env: dict[str, str] | None = None) -> Plan:
    env = dict(os.environ if env is None else env)
    system, machine = platform.system(), platform.machine().lower()
    gpus, note = ([], "") if system == "Darwin" else query_nvidia_smi(env.get("LORA_STUDIO_NVIDIA_SMI"))
    return make_plan(gpus, system, machine, note, env)


def describe(plan: Plan) -> str:
    lines = [f"torch build : {plan.build} ({plan.reason})",
             f"torch       : {plan.torch_wheel or plan.torch_requirement}"
             + (f" from {plan.index_url}" if plan.index_url and not plan.torch_wheel else "")]
    for g in plan.gpus:
        cc = f"sm_{g.compute_cap[0]}{g.compute_cap[1]}" if g.compute_cap else "compute capability unknown"
        lines.append(f"GPU         : {g.name}, driver {g.driver}, {cc}")
    lines.append(f"python      : {plan.python}")
    lines += [f"warning     : {w}" for w in plan.warnings]
    return "\n".join(lines)


def _shell(plan: Plan) -> str:
    values = {"TORCH_BUILD": plan.build, "TORCH_DEVICE": plan.device, "TORCH_INDEX": plan.index_url,
              "TORCH_REQ": plan.torch_requirement, "TORCH_WHEEL": plan.torch_wheel, "PLAN_PYTHON": plan.python}
    return "\n".join(f"{k}={shlex.quote(v)}" for k, v in values.items())


def wheel_content_hash(path: str) -> str:
    """A hash of what a wheel installs, blind to zip timestamps, so rebuilding the same source is no change."""
    import hashlib
    import zipfile

    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        for name in sorted(n for n in zf.namelist() if ".dist-info/RECORD" not in n):
            digest.update(name.encode() + b"\0" + hashlib.sha256(zf.read(name)).digest())
    return digest.hexdigest()[:32]


# The `lora-studio` command. From a terminal it is the app itself. From the applications menu (the desktop entry
# sets LORA_STUDIO_FROM_MENU=1; Terminal=false, so nobody reads stderr) the output goes to a log, and a start
# that fails (Qt aborts with status 134 when its X11 plugin misses system libraries) shows a dialog with
# what to install, through whichever of zenity, kdialog, xmessage is there, else a notification naming the log.
LAUNCHER = r"""#!/bin/sh
# LoRA Studio launcher, @TAG@ (@PREFIX@); 'install.sh --uninstall' removes it.
APP=@APP@
if [ -z "${LORA_STUDIO_FROM_MENU:-}" ]; then exec "$APP" "$@"; fi
unset LORA_STUDIO_FROM_MENU
LOG_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/lora-studio"
mkdir -p "$LOG_DIR" 2>/dev/null || LOG_DIR="${TMPDIR:-/tmp}"
LOG="$LOG_DIR/last-start.log"
"$APP" "$@" >"$LOG" 2>&1
status=$?
case "$status" in 0|129|130|143) exit "$status" ;; esac  # closed, or ended by hangup/Ctrl-C/logout
TITLE="LoRA Studio could not start"
HINT="$(@PYTHON@ -I -m lora_studio.qt_check --text 2>/dev/null)" && HINT=""  # says something only when Qt is the cause
TEXT="$(printf '%s (exit status %s).\n\n%s\n\nLast lines of its output:\n%s\n\nThe whole output: %s' \
  "$TITLE" "$status" "${HINT:-Run lora-studio in a terminal to see more.}" "$(tail -n 8 "$LOG")" "$LOG")"
has() { command -v "$1" >/dev/null 2>&1; }
if has zenity && zenity --error --no-markup --title="$TITLE" --text="$TEXT" 2>/dev/null; then :
elif has kdialog && kdialog --title "$TITLE" --error "$TEXT" 2>/dev/null; then :
elif has xmessage && printf '%s\n' "$TEXT" | xmessage -center -title "$TITLE" -file - 2>/dev/null; then :
elif has notify-send && notify-send -u critical "$TITLE" "${HINT:+$HINT
}Details: $LOG" 2>/dev/null; then :
else printf '%s\n' "$TEXT" >&2
fi
exit "$status"
"""


def launcher_script(app: str, python: str, prefix: str, tag: str) -> str:
    return (LAUNCHER.replace("@APP@", shlex.quote(app)).replace("@PYTHON@", shlex.quote(python))
            .replace("@PREFIX@", prefix).replace("@TAG@", tag))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["plan"]:
        plan = detect()
        fmt = args[1] if len(args) > 1 else "--text"
        print({"--json": plan.to_json, "--shell": lambda: _shell(plan)}.get(fmt, lambda: describe(plan))())
        return 0
    if args[:1] == ["record"] and len(args) >= 2:
        record = json.loads(Path(args[1]).read_text(encoding="utf-8"))
        for item in args[2:]:
            key, _, value = item.partition("=")
            record[key] = value
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0
    if args[:1] == ["launcher"] and len(args) == 5:
        sys.stdout.write(launcher_script(*args[1:]))
        return 0
    if args[:1] == ["wheel-hash"] and len(args) == 2:
        print(wheel_content_hash(args[1]))
        return 0
    print(__doc__.split("\n\n")[2], file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
