"""How long the GUI loop is blocked while the app opens a 1000-picture folder, trains from the Training tab
and previews on a slider release (the bar: 200 ms; the tests record it but do not assert it).

    python -m bench.gui_block [-k EXPR]

Runs the GUI tests that use the BlockProbe (tests/gui/conftest.py) offscreen and prints each one's longest
gap between 10 ms timer ticks, with where the GUI thread was when it missed ticks for over 150 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BAR_MS = 200
TESTS = ["tests/gui/test_dataset_tab.py::test_opening_a_1000_image_folder_never_blocks_the_gui",
         "tests/gui/test_training_tab.py::test_training_run_from_the_tab_feeds_the_plot_and_finishes",
         "tests/gui/test_preview_tab.py"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="pytest -k expression to pick some of the tests")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        gaps = Path(tmp) / "gaps.jsonl"
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LORA_STUDIO_GUI_GAPS=str(gaps))
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS] + (["-k", args.k] if args.k else [])
        proc = subprocess.run(cmd, cwd=root, env=env)
        rows = [json.loads(line) for line in gaps.read_text(encoding="utf-8").splitlines()] if gaps.exists() else []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for row in rows:
        verdict = "ok" if row["max_gap_ms"] <= BAR_MS else f"OVER the {BAR_MS} ms bar"
        print(f"{row['max_gap_ms']:8.1f} ms  {verdict:<20} {row['test']}")
        for stall in row["stalls"]:
            print("    blocked in:\n" + "".join(f"      {line}\n" for line in stall.splitlines()))
    print(f"load average after: {load}")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
