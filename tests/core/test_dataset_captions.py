"""Scanning and captions: all three caption sources round-trip; writes are atomic; bad caption files are named."""

import json
import os

import pytest
from PIL import Image

from lora_studio.core import io
from lora_studio.core.dataset import Dataset, scan
from lora_studio.errors import LoraStudioError


def img(path, size=(64, 48), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 80, 40)).save(path, format=fmt)
    return path


def names(ds):
    return [it.name for it in ds.items]


def kinds(problems):
    return sorted(p.kind for p in problems)


# --------------------------------------------------------------------------------------------- scan
def test_scan_recursive_case_insensitive_sorted_skips_hidden_and_temp(tmp_path):
    for n in ["img10.png", "img2.PNG", "a.JpEg", "sub/c.webp", "sub/deeper/d.bmp", "e.TIF", "f.tiff", "g.jpg"]:
        img(tmp_path / n, fmt="PNG")
    img(tmp_path / ".hidden.png", fmt="PNG")
    img(tmp_path / ".git" / "x.png", fmt="PNG")
    img(tmp_path / "__MACOSX" / "y.png", fmt="PNG")
    (tmp_path / ".a.png.x8k2.tmp").write_bytes(b"partial")
    (tmp_path / "notes.md").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in scan(tmp_path)]
    assert found == ["a.JpEg", "e.TIF", "f.tiff", "g.jpg", "img2.PNG", "img10.png",
                     "sub/c.webp", "sub/deeper/d.bmp"]
    assert names(Dataset.open(tmp_path)) == found


def test_open_missing_or_file(tmp_path):
    with pytest.raises(LoraStudioError, match="does not exist"):
        Dataset.open(tmp_path / "nope")
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(LoraStudioError, match="not a folder"):
        Dataset.open(f)


# ----------------------------------------------------------------------------------------- sidecars
def test_sidecar_round_trip_keeps_multiline_text_exactly(tmp_path):
    img(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes("first line\r\nsecond — ünïcode\n".encode())
    ds = Dataset.open(tmp_path)
    item = ds[0]
    assert item.caption_source == "sidecar" and item.caption == "first line\r\nsecond — ünïcode\n"
    assert item.prompt == "first line\r\nsecond — ünïcode"
    new = "a photo of sks\n\n  indented line\r\nend without newline"
    ds.set_caption(0, new)
    assert (tmp_path / "a.txt").read_bytes() == new.encode("utf-8")  # at once, byte for byte
    assert Dataset.open(tmp_path)[0].caption == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.txt"]  # no temp files left


def test_dot_caption_sidecars_and_new_captions_follow_the_folder(tmp_path):
    for n in "abc":
        img(tmp_path / f"{n}.png")
    (tmp_path / "a.caption").write_text("cap a")
    (tmp_path / "b.caption").write_text("cap b")
    ds = Dataset.open(tmp_path)
    assert [it.caption for it in ds] == ["cap a", "cap b", ""]
    assert ds.sidecar_extension == ".caption" and ds.caption_format == "sidecar"
    ds.set_caption(ds[2], "cap c")
    assert (tmp_path / "c.caption").read_text() == "cap c"
    assert not (tmp_path / "c.txt").exists()


def test_new_captions_in_uncaptioned_folder_become_txt_sidecars(tmp_path):
    img(tmp_path / "one.png")
    img(tmp_path / "sub" / "two.jpg", fmt="JPEG")
    ds = Dataset.open(tmp_path)
    assert ds.caption_format == "none" and all(it.caption_source is None for it in ds)
    ds.set_caption(1, "two")
    ds.set_caption(0, "")  # nothing to save for an image without a caption
    assert (tmp_path / "sub" / "two.txt").read_text() == "two"
    assert not (tmp_path / "one.txt").exists()
    assert ds[1].caption_source == "sidecar"


# ----------------------------------------------------------------------------------- metadata.jsonl
def test_metadata_round_trip_keeps_other_lines_keys_and_order(tmp_path):
    for n in ["a.png", "b.png", "c.png", "sub/d.png"]:
        img(tmp_path / n)
    lines = [
        '{"file_name": "a.png", "text": "cap a", "score": 7}',
        '{"zeta": 1, "file_name":"b.png","text":"cap b","alpha":[1,2]}',
        '  ',
        '{"file_name": "sub/d.png", "caption": "cap d"}',
    ]
    (tmp_path / "metadata.jsonl").write_text("\r\n".join(lines) + "\r\n", newline="")
    ds = Dataset.open(tmp_path)
    assert [it.caption for it in ds] == ["cap a", "cap b", "", "cap d"]
    assert [it.caption_source for it in ds] == ["metadata", "metadata", None, "metadata"]
    assert ds.caption_format == "metadata"

    ds.set_caption(1, 'line one\nline "two"')
    ds.set_caption(3, "new d")
    ds.set_caption(2, "cap c")  # no line yet: appended to the metadata.jsonl of the folder
    raw = (tmp_path / "metadata.jsonl").read_bytes().decode()
    out = raw.split("\r\n")
    assert out[0] == lines[0]  # untouched lines byte for byte
    assert out[2] == lines[2]
    b = json.loads(out[1])
    assert list(b) == ["zeta", "file_name", "text", "alpha"] and b["text"] == 'line one\nline "two"'
    assert b["alpha"] == [1, 2]
    assert json.loads(out[3]) == {"file_name": "sub/d.png", "caption": "new d"}  # keeps its 'caption' key
    assert json.loads(out[4]) == {"file_name": "c.png", "text": "cap c"}
    assert out[5] == "" and len(out) == 6
    again = Dataset.open(tmp_path)
    assert [it.caption for it in again] == ["cap a", 'line one\nline "two"', "cap c", "new d"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png", "metadata.jsonl", "sub"]


def test_metadata_in_subfolder_is_relative_to_it(tmp_path):
    img(tmp_path / "set1" / "x.png")
    (tmp_path / "set1" / "metadata.jsonl").write_text('{"file_name": "x.png", "text": "ex"}\n')
    ds = Dataset.open(tmp_path)
    assert ds[0].caption == "ex"
    ds.set_caption(0, "why")
    assert json.loads((tmp_path / "set1" / "metadata.jsonl").read_text()) == {"file_name": "x.png", "text": "why"}


def test_metadata_write_keeps_outside_edits_made_meanwhile(tmp_path):
    img(tmp_path / "a.png")
    img(tmp_path / "b.png")
    meta = tmp_path / "metadata.jsonl"
    meta.write_text('{"file_name": "a.png", "text": "A"}\n{"file_name": "b.png", "text": "B"}\n')
    ds = Dataset.open(tmp_path)
    meta.write_text('{"file_name": "a.png", "text": "A edited elsewhere"}\n{"file_name": "b.png", "text": "B"}\n')
    os.utime(meta, ns=(1, 1))
    assert ds.changed_on_disk() == [0, 1]
    ds.set_caption(1, "B2")
    assert meta.read_text() == '{"file_name": "a.png", "text": "A edited elsewhere"}\n{"file_name": "b.png", "text": "B2"}\n'


# ---------------------------------------------------------------------------------------- kohya folders
def test_kohya_folder_names_give_repeats_and_caption_sidecar_wins(tmp_path):
    img(tmp_path / "10_sks dog" / "1.png")
    img(tmp_path / "10_sks dog" / "2.png")
    img(tmp_path / "3_style" / "3.png")
    img(tmp_path / "plain" / "4.png")
    (tmp_path / "10_sks dog" / "2.txt").write_text("sks dog on a beach")
    ds = Dataset.open(tmp_path)
    got = [(it.name, it.repeats, it.caption, it.caption_source) for it in ds]
    assert got == [("3_style/3.png", 3, "style", "folder"),
                   ("10_sks dog/1.png", 10, "sks dog", "folder"),
                   ("10_sks dog/2.png", 10, "sks dog on a beach", "sidecar"),
                   ("plain/4.png", 1, "", None)]
    assert ds.all_problems() == []  # a sidecar overriding the folder caption is normal kohya use
    ds.set_caption(1, "sks dog, sitting")  # a folder name cannot hold one image's caption: sidecar
    assert (tmp_path / "10_sks dog" / "1.txt").read_text() == "sks dog, sitting"
    again = Dataset.open(tmp_path)
    assert (again[1].caption, again[1].caption_source, again[1].repeats) == ("sks dog, sitting", "sidecar", 10)


def test_kohya_bad_folder_names_are_reported(tmp_path):
    img(tmp_path / "0_zero" / "a.png")
    img(tmp_path / "5_" / "b.png")
    ds = Dataset.open(tmp_path)
    assert [it.repeats for it in ds] == [1, 5]
    assert ds[1].caption_source is None
    probs = {p.file: p for p in ds.problems}
    assert probs["0_zero"].kind == "folder_repeats" and "0 repeats" in probs["0_zero"].message
    assert probs["5_"].kind == "folder_name" and "10_sks dog" in probs["5_"].advice


def test_priority_sidecar_over_metadata_over_folder_and_conflict_warnings(tmp_path):
    img(tmp_path / "2_folder cap" / "a.png")
    img(tmp_path / "2_folder cap" / "b.png")
    img(tmp_path / "2_folder cap" / "c.png")
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "2_folder cap/a.png", "text": "meta a"}\n{"file_name": "2_folder cap/b.png", "text": "meta b"}\n')
    (tmp_path / "2_folder cap" / "a.txt").write_text("side a")
    (tmp_path / "2_folder cap" / "c.txt").write_text("side c")
    (tmp_path / "2_folder cap" / "c.caption").write_text("other c")
    ds = Dataset.open(tmp_path)
    assert [(it.caption, it.caption_source) for it in ds] == [
        ("side a", "sidecar"), ("meta b", "metadata"), ("side c", "sidecar")]
    assert kinds(ds[0].problems) == ["caption_conflict"] and "a.txt" in ds[0].problems[0].message
    assert kinds(ds[1].problems) == []
    assert kinds(ds[2].problems) == ["caption_conflict"] and "c.caption" in ds[2].problems[0].message
    assert all(p.severity == "warning" for p in ds.all_problems())


# ---------------------------------------------------------------------------------------- atomicity
@pytest.mark.parametrize("layout", ["sidecar", "metadata"])
def test_interrupted_write_leaves_old_caption(tmp_path, monkeypatch, layout):
    img(tmp_path / "a.png")
    if layout == "sidecar":
        target = tmp_path / "a.txt"
        target.write_text("old caption")
    else:
        target = tmp_path / "metadata.jsonl"
        target.write_text('{"file_name": "a.png", "text": "old caption"}\n')
    before = target.read_bytes()
    ds = Dataset.open(tmp_path)

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        ds.set_caption(0, "a new caption that never lands " * 50)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert ds[0].caption == "old caption"  # memory agrees with disk
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.png", target.name])
    assert Dataset.open(tmp_path)[0].caption == "old caption"


# ------------------------------------------------------------------------------------ bad caption files
def test_not_utf8_sidecar_is_named_and_never_rewritten(tmp_path):
    img(tmp_path / "a.png")
    bad = "café au lait".encode("cp1252")
    (tmp_path / "a.txt").write_bytes(bad)
    ds = Dataset.open(tmp_path)
    (p,) = ds[0].problems
    assert (p.kind, p.severity, p.file) == ("not_utf8", "error", "a.txt")
    assert "UTF-8" in p.advice
    with pytest.raises(LoraStudioError, match="a.txt"):
        ds.set_caption(0, "something")
    assert ds.add_trigger("sks") == 0 and ds.find_replace("caf", "x") == 0
    assert (tmp_path / "a.txt").read_bytes() == bad


def test_bom_is_read_warned_and_left_out_on_write(tmp_path):
    img(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfa cat")
    ds = Dataset.open(tmp_path)
    assert ds[0].caption == "a cat"
    assert kinds(ds[0].problems) == ["bom"] and ds[0].problems[0].severity == "warning"
    ds.set_caption(0, "a dog")
    assert (tmp_path / "a.txt").read_bytes() == b"a dog"
    assert Dataset.open(tmp_path)[0].problems == []


def test_empty_caption_file_warns(tmp_path):
    img(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text(" \n")
    ds = Dataset.open(tmp_path)
    (p,) = ds[0].problems
    assert (p.kind, p.severity, p.file, p.message) == ("empty_caption", "warning", "a.txt", "empty caption")
    assert not ds[0].has_caption


def test_bad_metadata_lines_are_named(tmp_path):
    img(tmp_path / "a.png")
    img(tmp_path / "b.png")
    meta = tmp_path / "metadata.jsonl"
    lines = [
        '{"file_name": "a.png", "text": "good"}',
        '{"file_name": "b.png", "text": "unterminated',
        '{"text": "no file name"}',
        '{"file_name": "../../etc/passwd", "text": "escape"}',
        '{"file_name": "/etc/passwd", "text": "absolute"}',
        '{"file_name": "b.png", "text": "' + "x" * 80_000 + '"}',
        '["a", "list"]',
        '{"file_name": "gone.png", "text": "no such image"}',
        '{"file_name": "a.png", "text": "dup"}',
    ]
    meta.write_text("\n".join(lines) + "\n")
    before = meta.read_bytes()
    ds = Dataset.open(tmp_path)
    assert ds[0].caption == "good" and ds[1].caption_source is None
    by_line = {p.message.split(":")[0]: p for p in ds.problems}
    assert by_line["line 2"].kind == "metadata_malformed" and by_line["line 2"].severity == "error"
    assert by_line["line 3"].kind == "metadata_missing_file_name"
    assert by_line["line 4"].kind == "metadata_outside" and "refused" in by_line["line 4"].message
    assert by_line["line 5"].kind == "metadata_outside"
    assert by_line["line 6"].kind == "metadata_line_too_large"
    assert by_line["line 7"].kind == "metadata_malformed"
    assert by_line["line 8"].kind == "metadata_no_image" and by_line["line 8"].severity == "warning"
    assert by_line["line 9"].kind == "metadata_duplicate"
    assert all(p.file == "metadata.jsonl" for p in ds.problems)
    assert meta.read_bytes() == before  # reading changed nothing
    ds.set_caption(1, "b now")  # appended; the broken lines stay for the user to fix
    out = meta.read_text().split("\n")
    assert out[:9] == lines and json.loads(out[9]) == {"file_name": "b.png", "text": "b now"}


def test_metadata_not_utf8_is_refused(tmp_path):
    img(tmp_path / "a.png")
    meta = tmp_path / "metadata.jsonl"
    meta.write_bytes('{"file_name": "a.png", "text": "naïve"}\n'.encode("latin-1"))
    ds = Dataset.open(tmp_path)
    assert [(p.kind, p.file) for p in ds.problems] == [("not_utf8", "metadata.jsonl")]
    with pytest.raises(LoraStudioError, match="metadata.jsonl"):
        ds.set_caption(0, "x")
    assert meta.read_bytes() == '{"file_name": "a.png", "text": "naïve"}\n'.encode("latin-1")


# ---------------------------------------------------------------------------- trigger / find-replace
def test_add_trigger_is_idempotent_and_keeps_whitespace(tmp_path):
    for n in "abcd":
        img(tmp_path / f"{n}.png")
    (tmp_path / "a.txt").write_text("a dog\n")
    (tmp_path / "b.txt").write_text("sks, a dog")
    (tmp_path / "c.txt").write_text("asksb")
    ds = Dataset.open(tmp_path)
    seen = []
    ds.caption_listeners.append(seen.append)
    assert ds.add_trigger("sks") == 3
    assert [it.caption for it in ds] == ["sks, a dog\n", "sks, a dog", "sks, asksb", "sks"]
    assert seen == [0, 2, 3]
    assert ds.add_trigger("sks") == 0
    assert ds.add_trigger("style", where="append", items=[0, 1]) == 2
    assert (tmp_path / "a.txt").read_text() == "sks, a dog, style\n"
    assert [it.caption for it in Dataset.open(tmp_path)] == [it.caption for it in ds]


def test_find_replace_counts_changed_captions(tmp_path):
    for n in "abc":
        img(tmp_path / f"{n}.png")
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "a Dog and a dog"}\n{"file_name": "b.png", "text": "a cat"}\n'
        '{"file_name": "c.png", "text": "dogma"}\n')
    ds = Dataset.open(tmp_path)
    assert ds.find_replace("dog", "wolf") == 2
    assert [it.caption for it in ds] == ["a Dog and a wolf", "a cat", "wolfma"]
    assert ds.find_replace(r"\bwolf\b", r"big \g<0>", regex=True) == 1
    assert ds.find_replace("DOG", "hound", case_sensitive=False) == 1
    assert ds.find_replace("zebra", "x") == 0
    assert ds.find_replace("a\\", "x") == 0  # literal text: a backslash is just a character
    assert [it.caption for it in Dataset.open(tmp_path)] == ["a hound and a big wolf", "a cat", "wolfma"]
    with pytest.raises(LoraStudioError, match="invalid"):
        ds.find_replace("(", "x", regex=True)


def test_changed_on_disk_notices_outside_edits_not_ours(tmp_path):
    img(tmp_path / "a.png")
    img(tmp_path / "b.png")
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "b.txt").write_text("two")
    ds = Dataset.open(tmp_path)
    ds.set_caption(0, "uno")
    assert ds.changed_on_disk() == []
    (tmp_path / "b.txt").write_text("two, edited in another editor")
    assert ds.changed_on_disk() == [1]
    assert ds.caption_signature(1) != ds[1].caption_stamp
    ds.reload()
    assert ds[1].caption == "two, edited in another editor" and ds.changed_on_disk() == []


def test_images_sharing_a_stem_share_the_sidecar(tmp_path):
    img(tmp_path / "a.png")
    img(tmp_path / "a.jpg", fmt="JPEG")
    ds = Dataset.open(tmp_path)
    ds.set_caption(0, "shared")
    assert [(it.caption, it.caption_source) for it in ds] == [("shared", "sidecar")] * 2
    again = Dataset.open(tmp_path)
    assert [it.caption for it in again] == ["shared", "shared"]
    assert kinds(again.all_problems()) == ["shared_caption"]


def test_bulk_edit_with_one_failing_write_keeps_that_caption_and_the_rest_land(tmp_path, monkeypatch):
    for n in "abc":
        img(tmp_path / f"{n}.png")
        (tmp_path / f"{n}.txt").write_text(f"cap {n}")
    ds = Dataset.open(tmp_path)
    seen = []
    ds.caption_listeners.append(seen.append)
    real_replace = os.replace

    def flaky(src, dst):
        if str(dst).endswith("b.txt"):
            raise PermissionError(13, "Permission denied", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", flaky)
    with pytest.raises(PermissionError):
        ds.add_trigger("sks")
    monkeypatch.undo()
    assert [(tmp_path / f"{n}.txt").read_text() for n in "abc"] == ["sks, cap a", "cap b", "sks, cap c"]
    assert [it.caption for it in ds] == ["sks, cap a", "cap b", "sks, cap c"] and seen == [0, 2]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp" or p.name.startswith(".")) == []
    assert ds.add_trigger("sks") == 1  # retry finishes the job


def test_root_named_like_kohya_folder_gets_a_hint_and_index_of(tmp_path):
    root = tmp_path / "10_sks dog"
    img(root / "a.png")
    ds = Dataset.open(root)
    assert ds[0].repeats == 1 and ds[0].caption_source is None
    (p,) = ds.problems
    assert p.kind == "folder_name" and "folder above" in p.advice and "'sks dog'" in p.advice
    assert ds.index_of("a.png") == 0
    with pytest.raises(ValueError):
        ds.index_of("b.png")
