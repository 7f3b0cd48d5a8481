"""Cross-process locks, so two app windows (or the app and the CLI) never interleave writes.

The lock file lives in the user's cache folder, keyed by the locked folder's real path, so nothing is
left inside the user's dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path
from typing import Iterator


def _lock_dir() -> Path:
    base = os.environ.get("LORA_STUDIO_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    folder = Path(base) / "lora-studio" / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def lock_path_for(folder: str | os.PathLike) -> Path:
    key = hashlib.sha1(os.path.realpath(folder).encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return _lock_dir() / f"{key}.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock for ``folder`` (blocks until other holders, in any process, let go)."""
    fh = open(lock_path_for(folder), "a+b")
    try:
        if sys.platform == "win32":
            import msvcrt

            fh.seek(0)
            while True:
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after ~10 s; keep waiting
                    continue
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()
