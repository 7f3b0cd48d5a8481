"""What every captioner is, and how a drafted caption meets the one a picture already has."""

from __future__ import annotations

import re
from typing import Sequence

from lora_studio.core.dataset.trigger import add_token
from lora_studio.errors import LoraStudioError

MODES = ("empty", "overwrite", "append", "prepend")


class Captioner:
    """Turns RGB pictures into caption drafts. Subclasses set ``name``/``batch_size`` and write ``caption``."""

    name = "captioner"
    batch_size = 8

    def caption(self, images: Sequence) -> list[str]:  # PIL images in, one text each out
        raise NotImplementedError


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise LoraStudioError(f"unknown caption mode {mode!r}.", f"use one of: {', '.join(MODES)}.")
    return mode


def clean(text: str) -> str:
    """One line, single spaces: model output may hold newlines or doubled blanks."""
    return re.sub(r"\s+", " ", text).strip()


def merge(old: str, draft: str, mode: str, separator: str = ", ") -> str:
    """The caption after drafting: ``empty`` fills only a blank one, ``append``/``prepend`` keep the old text."""
    body = old.strip()
    if not draft or (mode == "empty" and body):
        return old
    if mode in ("empty", "overwrite") or not body:
        return draft
    lead = old[: len(old) - len(old.lstrip())]
    trail = old[len(old.rstrip()):]
    return lead + (f"{body}{separator}{draft}" if mode == "append" else f"{draft}{separator}{body}") + trail


def final_caption(old: str, draft: str | None, mode: str, trigger: str = "") -> str:
    """``merge`` and then the trigger word, put first in the caption when it is not there yet."""
    new = merge(old, draft or "", mode)
    return add_token(new, trigger) if trigger.strip() else new
