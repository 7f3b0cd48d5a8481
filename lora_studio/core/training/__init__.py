"""Training engine: ``train(config, emit, stop, resume=False) -> result`` (see engine.py).

The modules in the order a run uses them: preflight (config, model and dataset checks), models (load and
encode), lora (inject, save), class_images (prior preservation), data + batches (order, caches, batches),
step (one training step), engine (the run: loop, progress, checkpoints via checkpoint.py, the saved adapter).
Speed-ups live in core.accel; nothing here is GPU-kernel code.
"""

from __future__ import annotations


def train(config, emit=None, stop=None, *, resume: bool = False):
    from lora_studio.core.training.engine import train as _train

    return _train(config, emit, stop, resume=resume)


__all__ = ["train"]
