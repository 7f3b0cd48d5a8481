"""The pre-flight check of a dataset folder (``lora-studio dataset check`` and the Dataset tab): report only."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .buckets import Buckets, Size, make_buckets, plan_buckets
from .dataset import Dataset
from .problems import ERROR, WARNING, Problem
from .scan import IMAGE_EXTENSIONS
from .validate import validate_dataset


@dataclass
class CheckReport:
    root: Path
    images: int
    problems: list[Problem]
    buckets: Buckets
    bucket_counts: dict[Size, int]
    assignments: dict[str, Size | None]  # image name -> bucket (None: unusable)
    caption_sources: dict[str, int]  # "sidecar"/"metadata"/"folder"/"none" -> images
    complete: bool = True  # False when stopped early
    dataset: Dataset | None = field(default=None, repr=False)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors and self.complete

    def to_dict(self) -> dict[str, Any]:
        b = self.buckets
        return {
            "root": str(self.root), "images": self.images, "ok": self.ok, "complete": self.complete,
            "errors": len(self.errors), "warnings": len(self.warnings),
            "captions": self.caption_sources,
            "problems": [p.to_dict() for p in self.problems],
            "buckets": {"resolution": b.resolution, "step": b.step, "min_side": b.min_side,
                        "max_side": b.max_side, "no_upscale": b.no_upscale,
                        "plan": [{"width": w, "height": h, "images": n} for (w, h), n in self.bucket_counts.items()]},
            "assignments": {name: list(s) if s else None for name, s in self.assignments.items()},
        }

    def format_text(self) -> str:
        src = self.caption_sources
        lines = [f"Dataset {self.root}: {self.images} image{'s' if self.images != 1 else ''}"]
        parts = [f"{src[k]} from {label}" for k, label in (("sidecar", "caption files"),
                 ("metadata", "metadata.jsonl"), ("folder", "folder names")) if src.get(k)]
        if src.get("none"):
            parts.append(f"{src['none']} without a caption")
        if parts:
            lines.append("Captions: " + ", ".join(parts))
        if self.problems:
            lines += ["", f"Problems ({len(self.errors)} error{'s' if len(self.errors) != 1 else ''}, "
                      f"{len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''}):"]
            for p in self.problems:
                lines.append(f"  {'ERROR' if p.is_error else 'warning'}  {p.file or '.'}: {p.message}")
                if p.advice:
                    lines.append(f"      fix: {p.advice}")
        lines += ["", f"Bucket plan ({self.buckets.describe()}):"]
        if self.bucket_counts:
            for (w, h), n in self.bucket_counts.items():
                lines.append(f"  {w:>5} x {h:<5} {n:>5} image{'s' if n != 1 else ''}")
        else:
            lines.append("  (no usable images)")
        unusable = sum(1 for s in self.assignments.values() if s is None)
        if unusable:
            lines.append(f"  {unusable} image{'s' if unusable != 1 else ''} unusable (see errors above)")
        lines.append("")
        if not self.complete:
            lines.append("Stopped before every image was checked.")
        elif self.errors:
            lines.append(f"NOT READY: {len(self.errors)} error{'s' if len(self.errors) != 1 else ''} would stop "
                         "training or lose data. Fix or remove the files named above.")
        else:
            lines.append("OK: ready to train" + (f" ({len(self.warnings)} warning"
                         f"{'s' if len(self.warnings) != 1 else ''}, handled automatically)." if self.warnings else "."))
        return "\n".join(lines)


def check_dataset(path: str | os.PathLike, resolution: int = 512, sdxl: bool = False, *, no_upscale: bool = False,
                  min_side: int | None = None, max_side: int | None = None, model: str | None = None,
                  enable_bucket: bool = True, progress: Callable[[int, int], None] | None = None,
                  stop: Callable[[], bool] | None = None) -> CheckReport:
    """Scan, read captions, open every image and plan buckets. Changes no file.

    With ``model`` the buckets are exactly the ones training uses for that model (its step, not ``sdxl``'s).
    """
    if model is not None:
        buckets = plan_buckets(model, resolution, enable_bucket=enable_bucket, no_upscale=no_upscale,
                               min_side=min_side, max_side=max_side)
    else:
        buckets = make_buckets(resolution, sdxl, min_side=min_side, max_side=max_side, no_upscale=no_upscale,
                               square_only=not enable_bucket)
    ds = Dataset.open(path)
    complete = validate_dataset(ds, buckets, progress, stop)
    problems = list(ds.problems)
    if not ds.items:
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        problems.append(Problem(ERROR, "no_images", "", f"no images found ({exts})",
                                "point at the folder that holds the training images", "dataset"))
    sources = Counter(item.caption_source or "none" for item in ds.items)
    uncaptioned = [item for item in ds.items if item.caption_source is None]
    all_missing = ds.items and len(uncaptioned) == len(ds.items)
    if all_missing:
        problems.append(Problem(WARNING, "no_captions", "", "no image has a caption",
                                "fine for DreamBooth (the instance prompt is used); for other training add "
                                ".txt caption files, a metadata.jsonl, or name folders like '10_sks dog'", "caption"))
    assignments: dict[str, Size | None] = {}
    for item in ds.items:
        problems += item.problems
        if item.caption_source is None and not all_missing:
            problems.append(Problem(WARNING, "missing_caption", item.name, "has no caption; it trains with an "
                                    "empty prompt", f"write one (e.g. {Path(item.name).stem}.txt beside it)",
                                    "caption"))
        usable = item.size is not None and not any(p.is_error and p.category == "image" for p in item.problems)
        assignments[item.name] = buckets.assign(item.size) if usable else None
    counts = Counter(s for s in assignments.values() if s is not None)
    bucket_counts = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return CheckReport(ds.root, len(ds.items), problems, buckets, bucket_counts, assignments,
                       dict(sources), complete, ds)
