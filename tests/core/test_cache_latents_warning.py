"""Why cache_latents was turned off for a run: the reason that applies, not "random flips or random crops"
while flips are off."""

from pathlib import Path

from lora_studio.config import TrainingConfig
from lora_studio.core.training.data import Example, augmentations_random
from lora_studio.core.training.engine import _why_latents_are_not_cached


def _examples():
    return [Example(Path("square.png"), "a", (64, 64), (64, 64)),
            Example(Path("wide.png"), "b", (100, 64), (72, 56))]


def test_random_crops_from_bucket_slack_are_named_with_a_picture_and_the_setting():
    cfg = TrainingConfig(random_flip=False, center_crop=False, cache_latents=True)
    assert augmentations_random(_examples(), cfg)
    msg = _why_latents_are_not_cached(_examples(), cfg)
    assert "flip" not in msg
    assert "1 of 2 pictures" in msg and "wide.png, 100x64 into 72x56" in msg and "center_crop = true" in msg


def test_random_flips_are_named_when_they_are_the_reason():
    cfg = TrainingConfig(random_flip=True, center_crop=True, cache_latents=True)
    msg = _why_latents_are_not_cached(_examples(), cfg)
    assert "random_flip = true" in msg and "crop" not in msg


def test_pictures_that_fit_their_buckets_keep_the_cache():
    cfg = TrainingConfig(random_flip=False, center_crop=False, cache_latents=True)
    assert not augmentations_random(_examples()[:1], cfg)
