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


def build_wheel(out: Path, tmp: Path) -> Path:
    src = copy_source_tree(tmp / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out)], check=True)
    (wheel,) = out.glob("lora_studio-*.whl")
    return wheel
