import pytest

from lora_studio.core import io


def test_write_text_replaces_whole(tmp_path):
    p = tmp_path / "a.txt"
    io.write_text(p, "old")
    io.write_text(p, "new\r\nline two\n")
    assert p.read_bytes() == b"new\r\nline two\n"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_interrupted_write_keeps_old(tmp_path):
    p = tmp_path / "a.txt"
    io.write_text(p, "old caption")
    with pytest.raises(RuntimeError):
        with io.atomic_path(p) as tmp:
            tmp.write_text("half a cap")
            raise RuntimeError("crash mid-write")
    assert p.read_text() == "old caption"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_dir(tmp_path):
    d = tmp_path / "ckpt"
    with io.atomic_dir(d) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(KeyError):
        with io.atomic_dir(d) as tmp:
            (tmp / "x").write_text("2")
            raise KeyError
    assert (d / "x").read_text() == "1"
    with io.atomic_dir(d) as tmp:
        (tmp / "y").write_text("3")
    assert sorted(p.name for p in d.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
