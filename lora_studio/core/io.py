"""Atomic file writes: a file under its final name is whole or absent, never partial."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Callable, Iterator


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows cannot open directories; rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_temp(final: Path, make: Callable[[str], None]) -> Path:
    """Create a fresh temporary name beside ``final`` with ``make`` (which fails if the name exists)."""
    for _ in range(100):
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        try:
            make(str(tmp))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {final}")


def _create_file(name: str) -> None:
    # 0o666 and not mkstemp's 0o600: the kernel applies the umask (and a default ACL), so a new file gets the
    # mode every other program would give it; ComfyUI/A1111 under another user can read the LoRA.
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))


def _set_mode(tmp: Path, final: Path, new_mode: int) -> None:
    """Give ``tmp`` the replaced file's permission bits (a 0644 caption stays 0644, a 0600 one 0600), or
    ``new_mode`` for a new file. Set after the writer ran: some writers (safetensors' save_file) replace the
    path they are given with a file of their own mode, 0600."""
    try:
        mode = stat.S_IMODE(final.stat().st_mode)
    except OSError:
        mode = new_mode
    with contextlib.suppress(OSError):  # e.g. a share that refuses chmod; the content matters more
        if stat.S_IMODE(tmp.stat().st_mode) != mode:
            os.chmod(tmp, mode)


def _umask_modes_inside(folder: Path, dir_mode: int) -> None:
    """Files and folders inside a new directory get the umask's default, whatever their writer chose
    (diffusers' save_pretrained writes its safetensors 0600); executable files stay executable."""
    file_mode = dir_mode & 0o666
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    continue
                want = dir_mode if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111 else file_mode
                if stat.S_IMODE(st.st_mode) != want:
                    os.chmod(path, want)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On any exception the temporary file is removed and the old file is left untouched. The result has the
    replaced file's mode, or the umask's default for a new file (as ``open(path, "w")`` would give it).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(final, _create_file)
    try:
        new_mode = stat.S_IMODE(tmp.stat().st_mode)  # what the umask (and a default ACL) gave it
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _set_mode(tmp, final, new_mode)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    # newline="" keeps the caption's own line endings: multi-line captions round-trip byte for byte.
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=encoding, newline="") as fh:
            fh.write(text)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Atomically produce ``path`` with a function that writes to a given path (e.g. save_file)."""
    with atomic_path(path) as tmp:
        writer(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name; it appears under ``path`` only when complete.

    An existing ``path`` is replaced only after the new one is whole (old moved aside, then removed). Modes
    as for ``atomic_path``.
    """
    import shutil

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(final, lambda name: os.mkdir(name, 0o777))  # the umask's default, not mkdtemp's 0o700
    try:
        new_mode = stat.S_IMODE(tmp.stat().st_mode)
        yield tmp
        _umask_modes_inside(tmp, new_mode)
        _set_mode(tmp, final, new_mode)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
