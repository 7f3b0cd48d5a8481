"""`python -m bench headline`: the README's rows, each a bench module run with --out, results outside the tree."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_headline_lists_the_readme_rows_as_module_commands(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench", "headline", "--dry-run", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    commands = [line for line in out.splitlines() if " -m bench." in line]
    modules = [c.split(" -m ")[1].split()[0] for c in commands]
    assert modules == ["bench.train_step", "bench.lowmem", "bench.preview_engine", "bench.preview_engine"]
    assert all(c.endswith(f"--out {tmp_path}") for c in commands)
    assert "--paths reference,engine" in commands[0] and "--variants bf16+engine,int8+engine" in commands[1]


def test_default_results_folder_is_outside_the_repository(monkeypatch):
    from bench.record import default_out

    monkeypatch.delenv("LORA_STUDIO_BENCH_OUT", raising=False)
    assert not Path(default_out()).resolve().is_relative_to(ROOT)


def test_no_bench_script_patches_sys_path():
    for path in (ROOT / "bench").glob("*.py"):
        assert "sys.path.insert" not in path.read_text(), path.name
