"""Find the images of a dataset folder: recursive, deterministic, hidden and temporary files skipped."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
CAPTION_EXTENSIONS = (".txt", ".caption")  # in order of preference
METADATA_NAME = "metadata.jsonl"
_SKIP_DIRS = {"__MACOSX", "__pycache__"}


def _skipped(name: str) -> bool:
    # Hidden files, and our own temporaries (io.atomic_path writes ".name.XXXX.tmp").
    return name.startswith(".") or name.endswith((".tmp", "~"))


def natural_key(rel: str) -> tuple:
    """Sort key: case-insensitive, numbers by value (img2 before img10), exact name as tie-break."""
    parts = tuple(
        tuple((0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", part.casefold()) if tok)
        for part in rel.split("/")
    )
    return parts, rel


def walk(root: str | os.PathLike) -> Iterator[tuple[Path, list[str]]]:
    """Yield (directory, visible file names) under ``root``, top-down, without following directory links."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _skipped(d) and d not in _SKIP_DIRS)
        yield Path(dirpath), sorted(f for f in filenames if not _skipped(f))


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan(root: str | os.PathLike) -> list[Path]:
    """All images under ``root`` (jpg/jpeg/png/webp/bmp/tif/tiff, any case), in natural sort order."""
    root = Path(root)
    found = [d / f for d, files in walk(root) for f in files if is_image_name(f)]
    return sorted(found, key=lambda p: natural_key(p.relative_to(root).as_posix()))
