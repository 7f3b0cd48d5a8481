"""Training examples, a resumable batch order and the per-example pixels (read through core/dataset).

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
    name: str = ""  # relative to the dataset folder ("" for class images)


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
class _TorchRandom:
    """The dataset layer's crop chooser draws from the run's per-step torch generator (stateless resume)."""

    def __init__(self, gen: torch.Generator):
        self.gen = gen

    def randint(self, low: int, high: int) -> int:  # inclusive, like random.randint
        return int(torch.randint(low, high + 1, (1,), generator=self.gen)) if high > low else low


def load_example(ex: Example, center_crop: bool, random_flip: bool, gen: torch.Generator | None):
    """(pixels in [-1, 1] as CHW float tensor, crop top-left (y, x)) for one example.

    Pictures are opened and cut only by the dataset layer (``load_training_image``, ``resize_to_bucket``): what
    `dataset check` and the Dataset tab describe is what trains.
    """
    from lora_studio.core.dataset import load_training_image, resize_to_bucket

    im = load_training_image(ex.path)
    rng = None if center_crop or gen is None else _TorchRandom(gen)
    im, crop = resize_to_bucket(im, ex.bucket, center_crop=rng is None, rng=rng, return_crop=True)
    flip = random_flip and gen is not None and bool(torch.rand((), generator=gen) < 0.5)
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    if flip:
        t = t.flip(-1)
    return t, crop


def crops_at_random(ex: Example) -> bool:
    """True when the picture does not fit its bucket exactly, so a random crop can move (the dataset's arithmetic)."""
    from lora_studio.core.dataset import crop_for_bucket

    return crop_for_bucket(ex.size, ex.bucket)[0] != ex.bucket


def augmentations_random(examples: list[Example], config) -> bool:
    """True when an image's pixels can differ between epochs (so its latents cannot be cached)."""
    if config.random_flip:
        return True
    if config.center_crop:
        return False
    return any(crops_at_random(ex) for ex in examples)
