"""Example images with one of each problem ``check_image`` knows, written for tests and demonstrations.

Every file is made here with Pillow or by hand (the PNG writer below), so no binary fixture is needed.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

SIDE = 640  # big enough for resolution 512 without a "too small" warning


def _noise(size: tuple[int, int], seed: int, mode: str = "RGB"):
    from PIL import Image

    channels = len(mode)
    data = random.Random(seed).randbytes(size[0] * size[1] * channels)
    return Image.frombytes(mode, size, data)


def _picture(size: tuple[int, int], seed: int, mode: str = "RGB"):
    """Smooth colour fields (cheap to encode, unlike noise), different for each seed."""
    from PIL import Image

    rng = random.Random(seed)
    bands = [Image.linear_gradient("L").rotate(rng.randrange(360)) if i % 2 == 0 else Image.radial_gradient("L")
             for i in range(len(mode))]
    return Image.merge(mode, [b.resize(size) for b in bands])


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_png(path: Path, width: int, height: int, bit_depth: int = 8, color_type: int = 2) -> Path:
    """A valid, all-black PNG written row by row (so a huge one costs no memory)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\0" * (1 + (width * channels * bit_depth + 7) // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def write_good_images(folder: str | Path, count: int = 3) -> list[str]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shapes = [(SIDE, 480), (512, 768), (SIDE, SIDE), (768, 512)]
    names = []
    for i in range(count):
        ext = ("png", "jpg", "webp")[i % 3]
        name = f"good{i + 1}.{ext}"
        _picture(shapes[i % len(shapes)], seed=i).save(folder / name, quality=90)
        names.append(name)
    return names


def write_bad_images(folder: str | Path) -> dict[str, str]:
    """One image of each problem kind; returns {file name: expected problem kind}."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}

    (folder / "unreadable.jpg").write_bytes(b"this is a text file with an image name\n")
    expected["unreadable.jpg"] = "unreadable"

    full = folder / "truncated.jpg"
    _noise((SIDE, SIDE), seed=10).save(full, quality=95)
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    expected["truncated.jpg"] = "truncated"

    png = folder / "truncated.png"
    _noise((SIDE, SIDE), seed=11).save(png)
    data = png.read_bytes()
    png.write_bytes(data[: len(data) * 2 // 3])
    expected["truncated.png"] = "truncated"

    write_png(folder / "bomb.png", 20000, 20000, bit_depth=1, color_type=0)  # 400 MP, about 60 kB on disk
    expected["bomb.png"] = "decompression_bomb"

    _picture((SIDE, SIDE), seed=12, mode="CMYK").save(folder / "cmyk.jpg", quality=90)
    expected["cmyk.jpg"] = "cmyk"

    import numpy as np

    levels = np.zeros((SIDE, SIDE), dtype=np.uint16)
    levels[:, : SIDE // 2] = 40000  # left half 40000 of 65535
    Image.fromarray(levels).save(folder / "gray16.png")
    expected["gray16.png"] = "16bit"

    pal = _picture((SIDE, SIDE), seed=13).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(folder / "palette.png", transparency=0)
    expected["palette.png"] = "palette_transparency"

    rgba = _picture((SIDE, SIDE), seed=14).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((SIDE, SIDE)))
    rgba.save(folder / "alpha.png")
    expected["alpha.png"] = "alpha"

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    _picture((SIDE, 480), seed=15).save(folder / "rotated.jpg", exif=exif, quality=90)
    expected["rotated.jpg"] = "exif_rotation"

    _picture((96, 80), seed=16).save(folder / "small.png")
    expected["small.png"] = "too_small"

    frames = [_picture((SIDE, SIDE), seed=17 + i) for i in range(3)]
    frames[0].save(folder / "animated.png", save_all=True, append_images=frames[1:], duration=100)
    expected["animated.png"] = "animated"
    return expected
