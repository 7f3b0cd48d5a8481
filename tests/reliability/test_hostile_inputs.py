"""A corpus of malformed and hostile inputs: each is refused or reported with a message naming the file,
nothing on disk changes, and no pickle payload ever runs."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lora_studio.core.dataset import ERROR, check_dataset
from lora_studio.errors import LoraStudioError


def _png(path: Path, mode="RGB", size=(96, 96), **save):
    Image.new(mode, size, 0 if mode in ("L", "I;16", "I") else None).save(path, **save)


# ----------------------------------------------------------------------------- dataset corpus

def _bomb_png(width: int, height: int) -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    body = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _build_dataset(root: Path) -> dict[str, str]:
    """Write one hostile file of each kind; return name -> the problem kind expected for it."""
    root.mkdir()
    expect = {}
    Image.new("RGB", (96, 96), (200, 10, 10)).save(root / "good.png")
    (root / "good.txt").write_text("a red square", encoding="utf-8")

    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (1, 2, 3)).save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expect["truncated.jpg"] = "truncated"

    (root / "not_an_image.png").write_bytes(b"this is not a png at all" * 10)
    expect["not_an_image.png"] = "unreadable"

    # A decompression bomb: a PNG header claiming 30000 x 30000 pixels with a tiny body.
    (root / "bomb.png").write_bytes(_bomb_png(30000, 30000))
    expect["bomb.png"] = "decompression_bomb"

    Image.new("CMYK", (96, 96), (0, 0, 0, 0)).save(root / "cmyk.jpg")
    expect["cmyk.jpg"] = "cmyk"
    Image.fromarray(np.full((96, 96), 40000, dtype=np.uint16)).save(root / "deep.png")
    expect["deep.png"] = "16bit"
    pal = Image.new("P", (96, 96), 0)
    pal.info["transparency"] = 0
    pal.save(root / "palette.png", transparency=0)
    expect["palette.png"] = "palette_transparency"
    Image.new("RGBA", (96, 96), (1, 2, 3, 100)).save(root / "alpha.png")
    expect["alpha.png"] = "alpha"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (96, 64)).save(root / "rotated.jpg", exif=exif)
    expect["rotated.jpg"] = "exif_rotation"
    frames = [Image.new("RGB", (96, 96), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(root / "animated.webp", save_all=True, append_images=frames[1:], duration=100)
    expect["animated.webp"] = "animated"
    Image.new("RGB", (8, 8)).save(root / "tiny.png")
    expect["tiny.png"] = "too_small"

    Image.new("RGB", (96, 96)).save(root / "latin1.png")
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    expect["latin1.txt"] = "not_utf8"
    Image.new("RGB", (96, 96)).save(root / "empty.png")
    (root / "empty.txt").write_text("", encoding="utf-8")
    expect["empty.txt"] = "empty_caption"
    Image.new("RGB", (96, 96)).save(root / "bom.png")
    (root / "bom.txt").write_bytes("\ufeffa caption with a BOM".encode("utf-8"))
    expect["bom.txt"] = "bom"
    return expect


def _snapshot(root: Path):
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size, p.read_bytes())
            for p in root.rglob("*") if p.is_file()}


def test_every_hostile_dataset_file_is_reported_by_name_and_nothing_changes(tmp_path):
    root = tmp_path / "ds"
    expect = _build_dataset(root)
    before = _snapshot(root)
    report = check_dataset(root, resolution=64)
    after = _snapshot(root)
    assert before == after, "a check must not change any file"
    found = {(p.file, p.kind) for p in report.problems}
    for name, kind in expect.items():
        if name == "truncated.jpg":  # cut before the image data: PIL cannot even open it
            assert (name, "truncated") in found or (name, "unreadable") in found, sorted(found)
            continue
        assert (name, kind) in found, f"{name}: expected a '{kind}' problem, got {sorted(found)}"
    for p in report.problems:
        assert p.message and p.file, p
    assert not report.ok, "truncated / unreadable / bomb images must stop training"
    assert {p.file for p in report.errors} >= {"truncated.jpg", "not_an_image.png", "bomb.png"}
    assert "good.png" not in {p.file for p in report.problems}


def test_non_utf8_caption_is_never_rewritten(tmp_path):
    from lora_studio.core.dataset import Dataset

    root = tmp_path / "ds"
    _build_dataset(root)
    raw = (root / "latin1.txt").read_bytes()
    ds = Dataset.open(root)
    item = next(i for i in ds.items if i.name == "latin1.png")
    assert any(p.kind == "not_utf8" for p in item.problems)
    with pytest.raises(LoraStudioError, match="latin1.txt"):
        ds.set_caption(item, "overwrite me")
    assert (root / "latin1.txt").read_bytes() == raw


@pytest.mark.parametrize(
    "file_name",
    ["../outside.png", "../../etc/passwd", "/etc/passwd", "sub/../../outside.png", "C:\\\\Windows\\\\evil.png"],
)
def test_metadata_cannot_point_outside_the_dataset(tmp_path, file_name):
    from lora_studio.core.dataset import Dataset

    outside = tmp_path / "outside.png"
    Image.new("RGB", (96, 96)).save(outside)
    root = tmp_path / "ds"
    root.mkdir()
    Image.new("RGB", (96, 96)).save(root / "a.png")
    lines = [{"file_name": "a.png", "text": "fine"}, {"file_name": file_name, "text": "pwned"}]
    meta = root / "metadata.jsonl"
    meta.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    ds = Dataset.open(root)
    assert [i.name for i in ds.items] == ["a.png"]
    assert ds.items[0].caption == "fine"
    problems = [p for p in ds.all_problems() if p.kind in ("metadata_outside", "metadata_malformed")]
    assert problems and all(p.file == "metadata.jsonl" for p in problems)
    # Editing the good caption keeps the refused line as it was: the user's file is not silently pruned.
    ds.set_caption(0, "edited")
    assert "pwned" in meta.read_text(encoding="utf-8")


def test_malformed_and_oversized_metadata_is_refused(tmp_path):
    from lora_studio.core.dataset import Dataset

    root = tmp_path / "ds"
    root.mkdir()
    Image.new("RGB", (96, 96)).save(root / "a.png")
    meta = root / "metadata.jsonl"
    meta.write_text('{"file_name": "a.png", "text": "ok"}\n{not json\n[1, 2]\n{"text": "no file"}\n'
                    + json.dumps({"file_name": "a.png", "text": "x" * 2_000_000}) + "\n", encoding="utf-8")
    ds = Dataset.open(root)
    kinds = {p.kind for p in ds.all_problems() if p.file == "metadata.jsonl"}
    assert {"metadata_malformed", "metadata_missing_file_name"} <= kinds
    assert "metadata_line_too_large" in kinds
    assert ds.items[0].caption == "ok"


# ----------------------------------------------------------------------------- model-file corpus

def _safetensors(path: Path, tensors: dict, metadata=None):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


def test_truncated_safetensors_is_named_incomplete(tmp_path):
    import torch

    from lora_studio.core.models.loader import resolve_model

    path = tmp_path / "model.safetensors"
    _safetensors(path, {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(LoraStudioError, match=r"model\.safetensors: file is incomplete or corrupted"):
        resolve_model(path)


@pytest.mark.parametrize("payload", [b"", b"\x00" * 4, struct.pack("<Q", 10**12) + b"{}", struct.pack("<Q", 5) + b"{nope"])
def test_garbage_safetensors_is_named_incomplete(tmp_path, payload):
    from lora_studio.core.models.loader import resolve_model

    path = tmp_path / "garbage.safetensors"
    path.write_bytes(payload)
    with pytest.raises(LoraStudioError, match=r"garbage\.safetensors: file is incomplete or corrupted"):
        resolve_model(path)


class _Payload:
    """Unpickling this creates a file: the proof that arbitrary code ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_payload_never_runs(tmp_path, suffix):
    import torch

    from lora_studio.core.models.loader import load_pickled_state_dict, resolve_model

    marker = tmp_path / "PWNED"
    path = tmp_path / f"evil{suffix}"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "evil": _Payload(str(marker))}, path)
    for load in (resolve_model, load_pickled_state_dict):
        with pytest.raises(LoraStudioError) as info:
            load(path)
        assert f"evil{suffix}" in str(info.value)
        assert ".safetensors" in info.value.advice
    assert not marker.exists(), "the pickle's payload ran"


def test_a_folder_that_is_not_a_model(tmp_path):
    from lora_studio.core.models.loader import resolve_model

    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    with pytest.raises(LoraStudioError, match="holiday-photos.*not a diffusers pipeline"):
        resolve_model(folder)


def test_unsupported_architecture_is_named(tmp_path):
    import torch

    from lora_studio.core.models.loader import resolve_model

    path = tmp_path / "flux.safetensors"
    _safetensors(path, {"double_blocks.0.img_attn.qkv.weight": torch.zeros(2, 2)})
    with pytest.raises(LoraStudioError, match="(?i)flux"):
        resolve_model(path)


def test_config_with_hostile_values(tmp_path):
    from lora_studio import config

    path = tmp_path / "run.toml"
    path.write_text('rank = 99999\n', encoding="utf-8")
    with pytest.raises(config.ConfigError, match="run.toml.*rank"):
        config.load(path)
    path.write_text('output_dir = 3\n', encoding="utf-8")
    with pytest.raises(config.ConfigError, match="output_dir"):
        config.load(path)


# ----------------------------------------------------------------------------- LoRA files

def _kohya_lora(path: Path, te_width: int, unet_cross: int, sdxl: bool):
    import torch

    te = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" if sdxl else \
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    unet = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k" if sdxl else \
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    tensors = {
        f"{te}.lora_down.weight": torch.randn(4, te_width), f"{te}.lora_up.weight": torch.randn(te_width, 4),
        f"{te}.alpha": torch.tensor(4.0),
        f"{unet}.lora_down.weight": torch.randn(4, unet_cross), f"{unet}.lora_up.weight": torch.randn(320, 4),
        f"{unet}.alpha": torch.tensor(4.0),
    }
    meta = {"ss_base_model_version": "sdxl_base_v1-0" if sdxl else "sd_v1", "ss_network_dim": "4"}
    _safetensors(path, tensors, meta)


def test_wrong_family_lora_is_refused_naming_both_families(tmp_path):
    from lora_studio.core.demo.build import build_pipeline
    from lora_studio.core.lora_files import check_fits

    pipe = build_pipeline("sd1", seed=0)  # the demo's SD 1.x architecture
    path = tmp_path / "downloaded_sdxl_lora.safetensors"
    _kohya_lora(path, te_width=768, unet_cross=2048, sdxl=True)
    with pytest.raises(LoraStudioError) as info:
        check_fits(path, pipe)
    text = str(info.value)
    assert "downloaded_sdxl_lora.safetensors" in text and "SDXL" in text and "SD 1" in text


def test_a_model_checkpoint_passed_as_a_lora_is_refused(tmp_path):
    import torch

    from lora_studio.core.demo.build import build_pipeline
    from lora_studio.core.lora_files import check_fits

    path = tmp_path / "not_a_lora.safetensors"
    _safetensors(path, {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)})
    with pytest.raises(LoraStudioError, match="not_a_lora.safetensors"):
        check_fits(path, build_pipeline("sd1", seed=0))
