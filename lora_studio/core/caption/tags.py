"""Comma-separated tags in captions: split, count, rename, delete, add.

A caption is rewritten only when a tag operation changes it; its surrounding whitespace (a sidecar's
final newline) stays where it was.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def _rebuild(caption: str, tags: list[str]) -> str:
    lead = caption[: len(caption) - len(caption.lstrip())]
    trail = caption[len(caption.rstrip()):]
    return lead + ", ".join(tags) + trail if tags else ""


def tag_counts(captions: Iterable[str]) -> Counter:
    """In how many captions each tag appears (once per caption)."""
    counts: Counter = Counter()
    for caption in captions:
        counts.update(dict.fromkeys(split_tags(caption), 1))
    return counts


def rename_tag(caption: str, old: str, new: str) -> str:
    """``old`` becomes ``new`` (a caption holding both keeps one); an empty ``new`` deletes ``old``."""
    tags = split_tags(caption)
    if old not in tags:
        return caption
    new = new.strip()
    out: list[str] = []
    for tag in tags:
        tag = new if tag == old else tag
        if tag and tag not in out:
            out.append(tag)
    return _rebuild(caption, out)


def remove_tag(caption: str, tag: str) -> str:
    return rename_tag(caption, tag, "")


def add_tag(caption: str, tag: str, where: str = "append") -> str:
    tag = tag.strip()
    tags = split_tags(caption)
    if not tag or tag in tags:
        return caption
    return _rebuild(caption, tags + [tag] if where == "append" else [tag] + tags)
