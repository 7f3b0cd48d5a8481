"""Files the app writes get the modes a user expects: the umask's default for a new file, the file's own
mode when it is replaced. (mkstemp's 0600 made every LoRA unreadable to ComfyUI running as another user.)"""

from __future__ import annotations

import os
import stat
import sys

import pytest
from PIL import Image

from lora_studio.core import io

pytestmark = pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX permission bits")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_and_folders_get_the_umask_default(tmp_path, umask_022):
    io.write_text(tmp_path / "a.txt", "x")
    io.write_with(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"1"))
    with io.atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "state.json").write_text("{}")
    assert (mode(tmp_path / "a.txt"), mode(tmp_path / "b.bin")) == (0o644, 0o644)
    assert mode(tmp_path / "ckpt") == 0o755 and mode(tmp_path / "ckpt" / "state.json") == 0o644


def test_a_replaced_file_keeps_its_own_mode(tmp_path, umask_022):
    shared, private = tmp_path / "shared.txt", tmp_path / "private.txt"
    for path, m in ((shared, 0o664), (private, 0o600)):
        path.write_text("old")
        os.chmod(path, m)
        io.write_text(path, "new")
        assert (path.read_text(), mode(path)) == ("new", m)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private.txt", "shared.txt"]  # no temporaries left


def test_a_caption_edit_keeps_0644(tmp_path, umask_022):
    from lora_studio.core.dataset.dataset import Dataset

    Image.new("RGB", (64, 64), "red").save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a red square", encoding="utf-8")
    os.chmod(tmp_path / "a.txt", 0o644)
    ds = Dataset.open(tmp_path)
    ds.set_caption(0, "a red square, studio light")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "a red square, studio light"
    assert mode(tmp_path / "a.txt") == 0o644


def test_a_writer_that_makes_its_own_0600_file_still_gives_0644(tmp_path, umask_022):
    import torch
    from safetensors.torch import save_file

    # safetensors 0.8 replaces the path it is given with a 0600 file of its own
    io.write_with(tmp_path / "a.safetensors", lambda tmp: save_file({"w": torch.zeros(2)}, str(tmp)))
    assert mode(tmp_path / "a.safetensors") == 0o644


def test_a_folder_built_atomically_gives_its_writers_files_the_umask_default(tmp_path, umask_022):
    import torch
    from safetensors.torch import save_file

    with io.atomic_dir(tmp_path / "fused") as tmp:  # as merge's save_pretrained of a fused model
        (tmp / "unet").mkdir(mode=0o700)
        save_file({"w": torch.zeros(2)}, str(tmp / "unet" / "model.safetensors"))
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(tmp / "run.sh", 0o700)
    assert mode(tmp_path / "fused" / "unet") == 0o755
    assert mode(tmp_path / "fused" / "unet" / "model.safetensors") == 0o644
    assert mode(tmp_path / "fused" / "run.sh") == 0o755
