"""Turning exceptions into a message and advice a hobbyist can act on."""

from __future__ import annotations


class LoraStudioError(Exception):
    """An error raised on purpose: ``str(exc)`` is the message, ``advice`` what to do."""

    def __init__(self, message: str, advice: str = ""):
        super().__init__(message)
        self.advice = advice


def describe(exc: BaseException) -> tuple[str, str]:
    advice = getattr(exc, "advice", "") or ""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and not advice:
        advice = "check the path."
    elif isinstance(exc, MemoryError) and not advice:
        advice = "close other programs or lower the batch size / resolution."
    elif type(exc).__name__ == "OutOfMemoryError" and not advice:
        message = "the GPU ran out of memory."
        advice = ("turn on gradient checkpointing, lower train_batch_size or resolution, keep cache_latents on, "
                  "or pick the preset for your card's memory.")
    return message, advice
