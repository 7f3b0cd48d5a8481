"""bench/e2e.py's whole path on the CPU: demo-sized models, the real `lora-studio train` in a fresh process."""

from __future__ import annotations

import json

from bench import e2e

ROW_KEYS = {"family", "preset_gib", "cap_gib", "ok", "ms_per_step", "first_step_s", "wall_s", "peak_gib"}


def test_tiny_run_writes_rows_with_the_issue_keys(tmp_path):
    rc = e2e.main(["--tiny", "--family", "sd1", "--preset", "8", "--out", str(tmp_path)])
    assert rc == 0
    [result] = tmp_path.glob("e2e_cpu_*.json")
    data = json.loads(result.read_text())
    [row] = data["rows"]
    assert ROW_KEYS <= set(row)
    assert row["ok"] and row["family"] == "sd1" and row["preset_gib"] == 8 and row["cap_gib"] is None
    assert 0 < row["first_step_s"] < row["wall_s"]
    assert row["ms_per_step"] > 0
    assert data["provenance"]["command"].startswith("python -m bench.e2e --tiny")
    # The run reported its phases, in the engine's order, each with its seconds.
    names = [p["name"] for p in row["phases"]]
    assert names == ["load", "class_images", "cache", "setup", "train", "save", "samples"]
    assert all(p["seconds"] >= 0 for p in row["phases"])
    # The run made the class images and the validation sample the preset's DreamBooth row asks for.
    run = tmp_path / "e2e-work" / "runs" / "sd1-8"
    assert len(list((run / "class").glob("*.png"))) == 2
    assert len(list((run / "out" / "samples").glob("*.png"))) == 1


def test_memory_cap_goes_to_the_train_command_by_its_variable():
    from lora_studio.commands import train

    # The cap travels to the child process through the variable the train command reads before CUDA work.
    assert e2e.child_env(7.5, False)[train.MEMORY_CAP_ENV] == "7.5"
    assert train.MEMORY_CAP_ENV not in e2e.child_env(None, False)
