"""Images as training sees them: upright, RGB, 8 bits, first frame, transparency on white; cut to a bucket."""

from __future__ import annotations

import math
import random
import warnings
from pathlib import Path

from lora_studio.errors import LoraStudioError

from .buckets import Size

_SIXTEEN_BIT = ("I", "F")  # "I;16", "I;16B", ... start with "I"


def _to_8bit(im):
    import numpy as np
    from PIL import Image

    a = np.asarray(im)
    if im.mode == "F":
        hi = 1.0 if a.size and float(np.nanmax(a)) <= 1.0 else 255.0  # float images are 0..1 or 0..255
    else:
        hi = 65535.0 if a.size and a.max() > 255 else 255.0
    a = np.clip(np.nan_to_num(a.astype(np.float64)) * (255.0 / hi), 0, 255).round().astype(np.uint8)
    return Image.fromarray(a, mode="L")


def to_rgb(im):
    """An RGB copy of a loaded PIL image: 16-bit reduced, CMYK converted, transparency composited on white."""
    from PIL import Image

    if im.mode.startswith(_SIXTEEN_BIT):
        im = _to_8bit(im)
    if im.mode == "P" or (im.mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode in ("RGBa", "La"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im.copy()


def load_training_image(path: str | Path):
    """Open an image for training: EXIF-rotated upright, first frame, RGB, 8 bits, transparency on white."""
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.seek(0)
                im.load()
                upright = ImageOps.exif_transpose(im)
                if upright is None:
                    upright = im
                return to_rgb(upright)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise LoraStudioError(f"{path} is too large to load safely ({exc}).",
                              "shrink it in an image editor or remove it from the dataset.") from exc
    except OSError as exc:
        raise LoraStudioError(f"{path} cannot be read as an image ({exc}).",
                              "run `lora-studio dataset check` on the folder; re-export or remove the file.") from exc


def thumbnail(path: str | Path, max_side: int = 160):
    """A small RGB preview for the caption grid, or None when the file cannot be shown.

    Cheap (JPEGs decode at reduced scale) and safe (a decompression bomb is never decoded).
    """
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.draft("RGB", (max_side, max_side))
                im.load()
                upright = ImageOps.exif_transpose(im) or im
                small = to_rgb(upright)
    except Exception:  # a preview is optional; `dataset check` says why the file is bad
        return None
    small.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return small


def crop_for_bucket(size: Size, bucket: Size, center_crop: bool = True, rng=None) -> tuple[Size, tuple[int, int]]:
    """(resized (w, h), crop (top, left)) that make an image of ``size`` exactly ``bucket``.

    ``rng``: random.Random or numpy.random.Generator for random crops (None: the random module).
    """
    w, h = size
    bw, bh = bucket
    scale = max(bw / w, bh / h)
    rw, rh = max(bw, math.ceil(w * scale - 1e-6)), max(bh, math.ceil(h * scale - 1e-6))
    if center_crop:
        return (rw, rh), ((rh - bh) // 2, (rw - bw) // 2)
    if rng is None:
        rng = random
    if hasattr(rng, "integers"):  # numpy Generator
        top, left = int(rng.integers(0, rh - bh + 1)), int(rng.integers(0, rw - bw + 1))
    else:
        top, left = rng.randint(0, rh - bh), rng.randint(0, rw - bw)
    return (rw, rh), (top, left)


def resize_to_bucket(img, bucket: Size, center_crop: bool = True, rng=None, return_crop: bool = False):
    """Resize ``img`` to cover ``bucket`` keeping its aspect ratio, then crop to exactly ``bucket`` (w, h).

    With ``return_crop`` returns (image, (top, left)): SDXL's crop coordinates for its time ids.
    """
    from PIL import Image

    (rw, rh), (top, left) = crop_for_bucket(img.size, bucket, center_crop, rng)
    if (rw, rh) != img.size:
        img = img.resize((rw, rh), Image.Resampling.LANCZOS)
    out = img.crop((left, top, left + bucket[0], top + bucket[1]))
    return (out, (top, left)) if return_crop else out
