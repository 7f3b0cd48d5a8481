"""Training examples, aspect buckets, a resumable batch order, image transforms and caches.

Randomness here is stateless: each micro-step m draws from generators seeded by (seed, m), so a run
resumed at step m sees exactly the batches, crops, flips and noise an uninterrupted run saw.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    size: tuple[int, int]  # original (width, height)
    bucket: tuple[int, int]  # training (width, height)


def step_seed(*parts: int) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generator(*parts: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(step_seed(*parts))


# ------------------------------------------------------------------------------------------ batch order
class BatchOrder:
    """Epochs of shuffled same-bucket batches, split across processes; micro-step -> batch, no state."""

    def __init__(self, examples: list[Example], batch_size: int, seed: int, repeats: int = 1,
                 num_processes: int = 1, process_index: int = 0, salt: int = 0):
        self.examples = examples
        self.batch_size = batch_size
        self.seed, self.salt = seed, salt
        self.repeats = repeats
        self.num_processes, self.process_index = num_processes, process_index
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for i, ex in enumerate(examples):
            by_bucket.setdefault(ex.bucket, []).append(i)
        self._buckets = [by_bucket[b] for b in sorted(by_bucket)]
        per_epoch = sum(math.ceil(len(ix) * repeats / batch_size) for ix in self._buckets)
        # Every process takes the same number of batches per epoch, so data-parallel steps stay in lockstep.
        self.batches_per_process = max(1, per_epoch // num_processes)
        self._cache: dict[int, list[list[int]]] = {}

    def _epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            rng = random.Random(step_seed(self.seed, self.salt, epoch))
            batches = []
            for indices in self._buckets:
                pool = indices * self.repeats
                rng.shuffle(pool)
                batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
            rng.shuffle(batches)
            need = self.batches_per_process * self.num_processes
            while len(batches) < need:  # fewer batches than processes: reuse, still deterministic
                batches += batches[: need - len(batches)]
            self._cache = {epoch: batches}
        return self._cache[epoch]

    def batch(self, micro_step: int) -> list[Example]:
        epoch, j = divmod(micro_step, self.batches_per_process)
        indices = self._epoch(epoch)[j * self.num_processes + self.process_index]
        return [self.examples[i] for i in indices]

    def epoch_of(self, micro_step: int) -> int:
        return micro_step // self.batches_per_process


# ------------------------------------------------------------------------------------------- images
def open_rgb(path: Path):
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        return im.convert("RGB")


def crop_slack(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    """Pixels left over (x, y) after scaling an image to cover its bucket."""
    w, h = size
    bw, bh = bucket
    scale = max(bw / w, bh / h)
    return max(0, round(w * scale) - bw), max(0, round(h * scale) - bh)


def load_example(ex: Example, center_crop: bool, random_flip: bool, gen: torch.Generator | None):
    """(pixels in [-1, 1] as CHW float tensor, crop top-left (y, x)) for one example."""
    from PIL import Image

    im = open_rgb(ex.path)
    bw, bh = ex.bucket
    scale = max(bw / im.width, bh / im.height)
    new = (max(bw, round(im.width * scale)), max(bh, round(im.height * scale)))
    if new != im.size:
        im = im.resize(new, Image.Resampling.LANCZOS)
    sx, sy = new[0] - bw, new[1] - bh
    if center_crop or gen is None:
        left, top = sx // 2, sy // 2
    else:
        left = int(torch.randint(0, sx + 1, (1,), generator=gen)) if sx else 0
        top = int(torch.randint(0, sy + 1, (1,), generator=gen)) if sy else 0
    im = im.crop((left, top, left + bw, top + bh))
    flip = random_flip and gen is not None and bool(torch.rand((), generator=gen) < 0.5)
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    if flip:
        t = t.flip(-1)
    return t, (top, left)


def augmentations_random(examples: list[Example], config) -> bool:
    """True when an image's pixels can differ between epochs (so its latents cannot be cached)."""
    if config.random_flip:
        return True
    if config.center_crop:
        return False
    return any(crop_slack(ex.size, ex.bucket) != (0, 0) for ex in examples)


# ------------------------------------------------------------------------------------------ buckets
def make_buckets(resolution: int, step: int | None = None, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(width, height) pairs of about resolution^2 pixels, sides multiples of ``step``."""
    step = step or (64 if resolution >= 256 else 8)
    area = resolution * resolution
    out = set()
    w = step
    while w <= resolution * max_ratio:
        h = (area // w) // step * step
        if h >= step and max(w / h, h / w) <= max_ratio:
            out.add((w, h))
        w += step
    out.add((resolution, resolution))
    return sorted(out)


def pick_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    ratio = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))
