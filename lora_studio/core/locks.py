"""Cross-process locks, so two app windows (or the app and the CLI) never interleave writes.

The lock file lives in the user's cache folder, keyed by the locked folder's real path, so nothing is
left inside the user's dataset. The locking itself is `filelock`'s (flock on POSIX, msvcrt on Windows).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator

from filelock import FileLock


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
    with FileLock(lock_path_for(folder)):
        yield
