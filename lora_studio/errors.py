"""Turning exceptions into a message and advice a hobbyist can act on."""

from __future__ import annotations

import errno


class LoraStudioError(Exception):
    """An error raised on purpose: ``str(exc)`` is the message, ``advice`` what to do."""

    def __init__(self, message: str, advice: str = ""):
        super().__init__(message)
        self.advice = advice


def describe(exc: BaseException) -> tuple[str, str]:
    advice = getattr(exc, "advice", "") or ""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) and not advice:
        where = f" while writing {exc.filename}" if exc.filename else ""
        message = f"the disk is full{where}."
        advice = ("free space on that drive or choose another output folder; files written before are intact "
                  "(LoRA Studio writes every file whole or not at all), and `--resume` continues from the last "
                  "complete checkpoint.")
    elif isinstance(exc, FileNotFoundError) and not advice:
        advice = "check the path."
    elif isinstance(exc, MemoryError) and not advice:
        advice = "close other programs or lower the batch size / resolution."
    elif type(exc).__name__ == "OutOfMemoryError" and not advice:
        message = "the GPU ran out of memory."
        advice = ("turn on gradient checkpointing, lower train_batch_size or resolution, keep cache_latents on, "
                  "or pick the preset for your card's memory.")
    return message, advice
