"""Training engine: ``train(config, emit, stop, resume=False) -> result`` (see engine.py)."""

from __future__ import annotations


def train(config, emit=None, stop=None, *, resume: bool = False):
    from lora_studio.core.training.engine import train as _train

    return _train(config, emit, stop, resume=resume)


__all__ = ["train"]
