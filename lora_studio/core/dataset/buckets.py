"""Aspect-ratio buckets: train each image at a size close to its own shape within a pixel budget.

The budget is resolution**2 pixels; sides are multiples of ``step`` (what the model needs: 64 for SD 1.x,
32 for SDXL) between ``min_side`` and ``max_side`` (by default resolution/4 and resolution*2).

``plan_buckets`` / ``training_buckets`` are the one planner: training, `dataset check` and the Dataset tab's
Bucket column all get their buckets from it, so what is shown is what trains.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from lora_studio.errors import LoraStudioError

Size = tuple[int, int]  # (width, height)


def _floor(value: float, step: int) -> int:
    return int(value // step) * step


@dataclass(frozen=True)
class Buckets:
    resolution: int
    step: int = 64
    min_side: int = 0
    max_side: int = 0
    no_upscale: bool = False
    sizes: tuple[Size, ...] = field(default=(), compare=False)

    @property
    def max_area(self) -> int:
        return self.resolution * self.resolution

    def assign(self, size: Size) -> Size:
        """The bucket for an image of ``size`` (w, h): the closest aspect ratio, larger area on ties.

        With ``no_upscale`` an image that would have to grow gets its own smaller bucket instead: the
        largest step-aligned size inside the image that keeps within the budget.
        """
        w, h = size
        if w <= 0 or h <= 0:
            raise ValueError(f"bad image size {size}")
        ratio = math.log(w / h)
        best = min(self.sizes, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))
        if self.no_upscale and upscale_factor(size, best) > 1.0:
            s = min(1.0, math.sqrt(self.max_area / (w * h)))
            bw = min(self.max_side, max(self.step, _floor(w * s, self.step)))
            bh = min(self.max_side, max(self.step, _floor(h * s, self.step)))
            return bw, bh
        return best

    def plan(self, sizes: Iterable[Size | None]) -> dict[Size, int]:
        """Bucket -> number of images (images without a size are left out), most used first."""
        counts = Counter(self.assign(s) for s in sizes if s is not None)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def describe(self) -> str:
        return (f"resolution {self.resolution}, step {self.step}, sides {self.min_side}-{self.max_side} px, "
                f"{len(self.sizes)} bucket{'s' if len(self.sizes) != 1 else ''}, "
                f"{'no upscaling' if self.no_upscale else 'upscaling allowed'}")


def upscale_factor(size: Size, bucket: Size) -> float:
    """How much the image must grow to cover the bucket (<= 1 means it only shrinks)."""
    return max(bucket[0] / size[0], bucket[1] / size[1])


def make_buckets(resolution: int, sdxl: bool = False, *, step: int | None = None, min_side: int | None = None,
                 max_side: int | None = None, no_upscale: bool = False, square_only: bool = False) -> Buckets:
    step = step or (32 if sdxl else 64)
    if resolution < step:
        raise LoraStudioError(f"resolution {resolution} is smaller than the bucket step {step}.",
                              f"use a resolution of at least {step} (512 for SD 1.5, 1024 for SDXL).")
    square = _floor(resolution, step)
    if min_side is None:
        min_side = max(step, _floor(resolution / 4, step))
    if max_side is None:
        max_side = max(square, _floor(resolution * 2, step))
    if min_side > max_side:
        raise LoraStudioError(f"bucket min side {min_side} is larger than max side {max_side}.",
                              "lower the min side or raise the max side.")
    if min_side > square or max_side < square:
        raise LoraStudioError(f"bucket sides {min_side}-{max_side} leave out the square {square}x{square} bucket "
                              f"of resolution {resolution}.", "keep min side <= resolution <= max side.")
    area = resolution * resolution
    sizes = {(square, square)}
    if square_only:  # enable_bucket = false: every picture is cropped to the square
        return Buckets(resolution, step, min_side, max_side, no_upscale, ((square, square),))
    # Walk the short side up to the square; the long side takes the rest of the budget; mirror for landscape.
    for w in range(max(step, _floor(min_side + step - 1, step)), square + 1, step):
        h = min(max_side, _floor(area / w, step))
        if h >= w:
            sizes.update({(w, h), (h, w)})
    return Buckets(resolution, step, min_side, max_side, no_upscale, tuple(sorted(sizes)))


def plan_buckets(model: str, resolution: int, *, enable_bucket: bool = True, no_upscale: bool = False,
                 min_side: int | None = None, max_side: int | None = None) -> Buckets:
    """The buckets training uses for ``model`` (a path or 'demo'): its family's step, the no-upscale rule."""
    from lora_studio.core.models.loader import resolve_model
    from lora_studio.core.models.native import size_multiple

    ref = resolve_model(model)
    return make_buckets(resolution, ref.family == "sdxl", step=size_multiple(ref), min_side=min_side,
                        max_side=max_side, no_upscale=no_upscale, square_only=not enable_bucket)


def training_buckets(config) -> Buckets:
    """The buckets a run with this TrainingConfig trains at."""
    return plan_buckets(config.pretrained_model_name_or_path, config.resolution,
                        enable_bucket=config.enable_bucket, no_upscale=config.bucket_no_upscale)
