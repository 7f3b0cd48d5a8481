"""Open every image for real and report what would stop training (errors) or be changed on the fly (warnings).

Nothing is written: images are opened read-only, and a decompression bomb is never decoded.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable, Iterator

from .buckets import Buckets, upscale_factor
from .problems import ERROR, WARNING, Problem

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default, used when a program turned the limit off
TOO_SMALL_FACTOR = 1.1  # upscaling by more than this looks soft enough to mention
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_REMOVE = "re-export it from the original, or remove it from the dataset"


def _pixel_limit() -> int:
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS


def _orientation(im) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if value else 1
    except Exception:  # a damaged EXIF block is no reason to reject the pixels
        return 1


def _sixteen_bit(im) -> bool:
    if im.mode.startswith(("I;16", "I", "F")):
        return True
    # 16-bit RGB(A) PNG/TIFF open as 8-bit modes; the raw mode of the tile still tells.
    for tile in getattr(im, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else ""
        if isinstance(args, tuple):
            args = args[0] if args else ""
        if ";16" in str(args):
            return True
    return False


def check_image(path: str | Path, name: str | None = None,
                buckets: Buckets | None = None) -> tuple[list[Problem], tuple[int, int] | None]:
    """(problems, upright (w, h) or None when unusable) for one image file.

    Never raises for a bad file: every failure is an ERROR problem with advice. Nothing over the
    decompression-bomb limit is decoded."""
    path = Path(path)
    name = name or path.name
    problems: list[Problem] = []

    def add(severity: str, kind: str, message: str, advice: str) -> None:
        problems.append(Problem(severity, kind, name, message, advice, "image"))

    facts = _read_image(path, add)
    if facts is None:
        return problems, None
    _format_warnings(facts, add)
    w, h = facts["size"]
    size = (h, w) if facts["orientation"] in (5, 6, 7, 8) else (w, h)
    if buckets is not None:
        _size_warning(size, buckets, add)
    return problems, size


def _bomb(add, detail: str) -> None:
    m = re.search(r"(\d+) pixels\D+(\d+) pixels", detail)
    if m:
        detail = f"{int(m.group(1)) / 1e6:.0f} megapixels, over the safety limit of {int(m.group(2)) / 1e6:.0f}"
    add(ERROR, "decompression_bomb", f"is too large to load safely ({detail}); it was not decoded",
        "shrink it to a few megapixels (e.g. 2048 px on the long side) in an image editor, or remove it")


def _read_image(path: Path, add) -> dict | None:
    """What the warnings need to know about the file, after a header check and a full decode; None (and an
    ERROR problem added) when it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return _bomb(add, str(exc))
        except UnidentifiedImageError:
            add(ERROR, "unreadable", "is not an image that can be read (damaged, or not really "
                f"{path.suffix.lower().lstrip('.') or 'an image'})", _REMOVE)
            return None
        except OSError as exc:
            add(ERROR, "unreadable", f"cannot be opened ({exc.strerror or exc})",
                "check the file's permissions, or remove it from the dataset")
            return None
        with im:
            w, h = im.size
            if w * h > _pixel_limit():
                return _bomb(add, f"{w}x{h} = {w * h} pixels, over the limit of {_pixel_limit()} pixels")
            if w == 0 or h == 0:
                add(ERROR, "unreadable", f"has no pixels ({w}x{h})", _REMOVE)
                return None
            facts = {"size": (w, h), "frames": getattr(im, "n_frames", 1) or 1, "sixteen": _sixteen_bit(im)}
            try:
                im.verify()  # checks structure and checksums without decoding
            except Exception as exc:
                add(ERROR, "truncated", f"is damaged or cut short ({exc})", "re-download or re-copy it, " + _REMOVE)
                return None
        try:
            with Image.open(path) as im:
                im.load()  # a real decode: catches data cut short after a valid header
                facts.update(mode=im.mode, info=dict(im.info), orientation=_orientation(im),
                             alpha_extrema=im.getchannel("A").getextrema() if im.mode in ("RGBA", "LA", "PA") else None)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return _bomb(add, str(exc))
        except Exception as exc:
            truncated = "truncated" in str(exc) or "broken" in str(exc) or isinstance(exc, (OSError, SyntaxError))
            add(ERROR, "truncated" if truncated else "unreadable", f"cannot be decoded ({exc})",
                "re-download or re-copy it, " + _REMOVE)
            return None
    return facts


def _format_warnings(facts: dict, add) -> None:
    mode, info, orientation = facts["mode"], facts["info"], facts["orientation"]
    if mode == "CMYK":
        add(WARNING, "cmyk", "is CMYK (print colours); it is converted to RGB on the fly and colours may shift",
            "for exact colours, re-export it as RGB (sRGB)")
    if facts["sixteen"]:
        shown = mode if mode.startswith(("I", "F")) else f"16-bit {mode}"
        add(WARNING, "16bit", f"has 16 bits per channel ({shown}); it is reduced to 8 bits on the fly",
            "nothing to do, or re-export it as 8-bit to save memory and time")
    if mode == "P" and "transparency" in info:
        add(WARNING, "palette_transparency", "is a palette image with transparency; transparent pixels become "
            "white", "if the subject should not sit on white, re-export it as RGB with the background you want")
    elif mode in _ALPHA_MODES or (mode in ("L", "RGB") and "transparency" in info):
        opaque = facts["alpha_extrema"] == (255, 255)
        add(WARNING, "alpha", "has an alpha channel" + (" (every pixel is opaque, so nothing changes); it is "
            "dropped" if opaque else "; transparent areas become white"),
            "nothing to do" if opaque else "if the subject should not sit on white, re-export it as RGB "
            "with the background you want")
    if orientation != 1:
        add(WARNING, "exif_rotation", f"has EXIF orientation {orientation}; it is rotated upright on the fly",
            "nothing to do; other tools may show it rotated, so re-save it upright to be sure")
    if facts["frames"] > 1:
        add(WARNING, "animated", f"is animated ({facts['frames']} frames); only the first frame is used",
            "extract the frames you want as separate images")


def _size_warning(size: tuple[int, int], buckets: Buckets, add) -> None:
    plain = Buckets(buckets.resolution, buckets.step, buckets.min_side, buckets.max_side, False, buckets.sizes)
    natural = plain.assign(size)
    factor = upscale_factor(size, natural)
    if factor > TOO_SMALL_FACTOR:
        if buckets.no_upscale:
            bw, bh = buckets.assign(size)
            what = f"without upscaling it trains in a smaller {bw}x{bh} bucket"
        else:
            what = f"it is upscaled x{factor:.1f} to its {natural[0]}x{natural[1]} bucket and will look soft"
        add(WARNING, "too_small", f"is {size[0]}x{size[1]}, small for resolution {buckets.resolution}: {what}",
            "use a larger original, or lower the resolution")


def iter_validate(dataset, buckets: Buckets | None = None) -> Iterator[tuple[int, list[Problem]]]:
    """Check each image of ``dataset`` in turn, yielding (index, image problems); stop by not iterating further.

    Each item's image problems replace earlier ones in ``item.problems``; its ``size`` is filled in.
    """
    for i, item in enumerate(dataset.items):
        problems, size = check_image(item.path, item.name, buckets)
        item.problems = [p for p in item.problems if p.category != "image"] + problems
        item._size, item._size_read = size, True
        yield i, problems


def validate_dataset(dataset, buckets: Buckets | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     stop: Callable[[], bool] | None = None) -> bool:
    """Check every image; ``progress(done, total)`` after each; ``stop()`` is asked between images.

    Returns True when every image was checked (False when stopped early).
    """
    total = len(dataset.items)
    for i, _ in iter_validate(dataset, buckets):
        if progress is not None:
            progress(i + 1, total)
        if stop is not None and stop() and i + 1 < total:
            return False
    return True
