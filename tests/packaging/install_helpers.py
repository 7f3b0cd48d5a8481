import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def copy_source_tree(dest: Path) -> Path:
    """A clean copy of the tree as git would ship it: no build/, dist/ or egg-info left by earlier builds
    (setuptools reuses build/lib, so a stale copy there could hide a missing file)."""
    ignore = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".venv", ".whl", ".benchmarks", "lora-studio-demo", "out")
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def build_wheel(out: Path, src: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out)], check=True)
    (wheel,) = out.glob("lora_studio-*.whl")
    return wheel

INSTALLER = REPO / "packaging" / "linux" / "install.sh"


def fake_nvidia_smi(bin_dir: Path, rows: list[tuple[str, str, str]], knows_compute_cap: bool = True,
                    fails: str = "") -> Path:
    """An nvidia-smi that answers the installer's query the way a real driver of that age does:
    drivers before ~R510 reject the compute_cap field; a driver that is not loaded fails outright."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    with_cc = "\n".join(f"{n}, {d}, {c}" for n, d, c in rows)
    without_cc = "\n".join(f"{n}, {d}" for n, d, _ in rows)
    script = ["#!/bin/sh"]
    if fails:
        script += [f"echo {shlex.quote(fails)}", "exit 9"]
    else:
        script += ['case "$*" in',
                   "  *compute_cap*) " + ("cat <<'EOF'\n" + with_cc + "\nEOF\n" if knows_compute_cap else
                                          """echo 'Field "compute_cap" is not a valid field to query.'; exit 2"""),
                   "  ;;",
                   "  *) cat <<'EOF'\n" + without_cc + "\nEOF\n  ;;",
                   "esac"]
    path = bin_dir / "nvidia-smi"
    path.write_text("\n".join(script) + "\n")
    path.chmod(0o755)
    return path


def path_without_nvidia_smi(extra: Path | None = None) -> str:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "nvidia-smi").exists()]
    return os.pathsep.join(([str(extra)] if extra else []) + dirs)


def tree_snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every path under root with a checksum for files and link targets: what 'changes nothing' compares."""
    snap = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        if path.is_symlink():
            snap[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            snap[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            snap[rel] = "dir"
    return snap
