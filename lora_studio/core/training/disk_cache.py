"""Encoded pictures and captions kept on disk, so the next run on the same pictures starts without encoding.

An entry's name is a hash of everything its tensors depend on: the picture (absolute path, size in bytes,
modification time) or the caption's text, the bucket, and the weights that encoded it (a fingerprint of the VAE
or of the text encoders, so another model, or the same name with other weights, never reads a stale entry).
A changed picture gets a new name and is encoded again; the others are read. Files are written atomically.
``LORA_STUDIO_CACHE_DIR`` moves the cache (default: the user's cache folder).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

CACHE_ENV = "LORA_STUDIO_CACHE_DIR"
_SAMPLE = 1024  # values per parameter that go into a fingerprint


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("lora-studio", appauthor=False)) / "encoded"


def fingerprint(*modules) -> str:
    """A cheap identity of frozen weights: up to 1024 evenly spaced values of every parameter (a fine-tune that
    changed only middle layers still gets another fingerprint), gathered on the device and copied once."""
    h = hashlib.blake2b(digest_size=12)
    for module in modules:
        samples = []
        for p in module.parameters():
            flat = p.detach().reshape(-1)
            samples.append(flat[:: max(1, flat.numel() // _SAMPLE)][:_SAMPLE].float())
        h.update(torch.cat(samples).cpu().numpy().tobytes())
    return h.hexdigest()


def _name(**key) -> str:
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=16).hexdigest()


def picture_key(path: Path, bucket, weights: str) -> str:
    st = Path(path).stat()
    return _name(kind="latents", path=str(Path(path).resolve()), bytes=st.st_size, mtime_ns=st.st_mtime_ns,
                 bucket=list(bucket), weights=weights)


def caption_key(caption: str, weights: str) -> str:
    return _name(kind="text", caption=caption, weights=weights)


class DiskCache:
    """``get(key) -> dict of tensors or None``; ``put(key, tensors)``; ``None`` values are left out."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_root()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict | None:
        from safetensors.torch import load_file

        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))
        except Exception:  # noqa: BLE001 - a damaged entry is encoded again and overwritten
            return None

    def put(self, key: str, tensors: dict) -> None:
        from safetensors.torch import save_file

        from lora_studio.core.io import write_with

        data = {k: v.detach().contiguous().cpu() for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        try:
            write_with(self._path(key), lambda tmp: save_file(data, str(tmp)))
        except OSError:
            pass  # a full or read-only disk costs the next run its head start, not this run
