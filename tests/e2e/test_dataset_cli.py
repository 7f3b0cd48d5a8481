"""`lora-studio dataset check DIR`: names every bad file, exits 1 on errors, prints the bucket plan, changes nothing."""

import hashlib
import json
import re
import subprocess
import sys

import pytest
from PIL import Image

from lora_studio.cli import main
from tests.image_samples import write_bad_images, write_good_images

REASONS = {
    "unreadable": "not an image", "truncated": "cut short|cannot be decoded", "decompression_bomb": "too large",
    "cmyk": "CMYK", "16bit": "16 bits", "palette_transparency": "palette", "alpha": "alpha channel",
    "exif_rotation": "EXIF orientation", "too_small": "small for resolution", "animated": "animated",
}


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()} | {
            "dirs": sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_dir())}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    expected = write_bad_images(folder)
    good = write_good_images(folder)
    for name in good:
        (folder / name).with_suffix(".txt").write_text(f"a photo of {name}")
    (folder / "cmyk.txt").write_bytes("caf\xe9".encode("latin-1"))  # not UTF-8
    (folder / "alpha.txt").write_bytes(b"\xef\xbb\xbfwith a bom")
    (folder / "rotated.txt").write_text("")
    return folder, expected


def test_check_names_every_bad_file_and_exits_1(bad_folder, capsys):
    folder, expected = bad_folder
    before = snapshot(folder)
    assert main(["dataset", "check", str(folder)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name, kind in expected.items():
        hits = [line for line in lines if f" {name}: " in line]
        assert hits, f"{name} not reported"
        assert re.search(REASONS[kind], " ".join(hits)), (name, hits)
        severity = "ERROR" if kind in ("unreadable", "truncated", "decompression_bomb") else "warning"
        assert any(line.strip().startswith(severity) for line in hits), (name, hits)
    assert "cmyk.txt: is not UTF-8" in out
    assert "alpha.txt: starts with a byte-order mark" in out
    assert "rotated.txt: empty caption" in out
    assert "small.png: has no caption" in out and "good1.png: has no caption" not in out
    assert "Bucket plan" in out and "NOT READY" in out
    assert snapshot(folder) == before  # a check changes no file


def test_check_json(bad_folder, capsys):
    folder, expected = bad_folder
    before = snapshot(folder)
    assert main(["dataset", "check", str(folder), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["images"] == len(expected) + 3
    kinds = {(p["file"], p["kind"]) for p in report["problems"]}
    assert {(name, kind) for name, kind in expected.items()} <= kinds
    assert ("cmyk.txt", "not_utf8") in kinds
    assert report["assignments"]["bomb.png"] is None and report["assignments"]["good1.png"] == [576, 448]
    assert snapshot(folder) == before


def test_clean_folder_prints_bucket_plan_and_exits_0(tmp_path, capsys):
    names = write_good_images(tmp_path, count=4)
    (tmp_path / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": n, "text": f"caption {i}"}) + "\n" for i, n in enumerate(names)))
    before = snapshot(tmp_path)
    assert main(["dataset", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Problems" not in out and "Captions: 4 from metadata.jsonl" in out
    for bucket in ("576 x 448", "384 x 640", "512 x 512", "640 x 384"):
        assert re.search(bucket + r" +1 image\n", out), bucket
    assert "OK: ready to train." in out
    assert snapshot(tmp_path) == before


def test_demo_sized_world_at_resolution_64(tmp_path, capsys):
    for i in range(5):
        Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "metadata.jsonl").write_text("")
    assert main(["dataset", "check", str(tmp_path), "--resolution", "64"]) == 0
    assert re.search(r"64 x 64 +5 images", capsys.readouterr().out)
    assert main(["dataset", "check", str(tmp_path), "--resolution", "64", "--sdxl", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["buckets"]["step"] == 32 and report["buckets"]["plan"] == [{"width": 64, "height": 64, "images": 5}]
    assert [p["kind"] for p in report["problems"]] == ["no_captions"]


def test_missing_folder_and_empty_folder(tmp_path, capsys):
    assert main(["dataset", "check", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["dataset", "check", str(tmp_path)]) == 1
    assert "no images found" in capsys.readouterr().out


def test_console_entry_exit_code(bad_folder):
    folder, _ = bad_folder
    run = subprocess.run([sys.executable, "-m", "lora_studio", "dataset", "check", str(folder), "--resolution", "256"],
                         capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert "bomb.png" in run.stdout and "Traceback" not in run.stderr
