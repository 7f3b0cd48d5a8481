"""Aspect-ratio buckets and the resize/crop that puts an image into its bucket."""

import random

import numpy as np
import pytest
from PIL import Image

from lora_studio.core.dataset import crop_for_bucket, make_buckets, resize_to_bucket, upscale_factor
from lora_studio.errors import LoraStudioError


@pytest.mark.parametrize("resolution,sdxl", [(512, False), (768, False), (1024, True), (640, True), (500, False)])
def test_bucket_invariants(resolution, sdxl):
    b = make_buckets(resolution, sdxl)
    step = 32 if sdxl else 64
    assert b.step == step and b.min_side == max(step, resolution // 4 // step * step)
    square = resolution // step * step
    assert (square, square) in b.sizes
    for w, h in b.sizes:
        assert w % step == 0 and h % step == 0
        assert w * h <= resolution * resolution
        assert b.min_side <= w <= b.max_side and b.min_side <= h <= b.max_side
        assert (h, w) in b.sizes  # portrait and landscape alike
    assert list(b.sizes) == sorted(set(b.sizes))


def test_defaults_scale_with_resolution():
    b = make_buckets(1024, sdxl=True)
    assert (b.min_side, b.max_side) == (256, 2048)
    b = make_buckets(512)
    assert (b.min_side, b.max_side) == (128, 1024)
    b = make_buckets(512, min_side=256, max_side=768)
    assert min(min(s) for s in b.sizes) >= 256 and max(max(s) for s in b.sizes) <= 768


def test_tiny_resolutions_work():
    assert make_buckets(64).sizes == ((64, 64),)
    b = make_buckets(64, sdxl=True)
    assert (64, 64) in b.sizes and all(w % 32 == 0 and h % 32 == 0 for w, h in b.sizes)
    assert make_buckets(64).assign((300, 100)) == (64, 64)


def test_bad_bucket_settings_are_clear_errors():
    with pytest.raises(LoraStudioError, match="resolution 32"):
        make_buckets(32)
    with pytest.raises(LoraStudioError, match="min side"):
        make_buckets(512, min_side=768, max_side=640)
    with pytest.raises(LoraStudioError, match="square"):
        make_buckets(512, max_side=256)


def test_assign_closest_aspect_ratio():
    b = make_buckets(512)
    assert b.assign((512, 512)) == (512, 512)
    assert b.assign((3000, 3000)) == (512, 512)
    assert b.assign((800, 600)) == (576, 448)
    assert b.assign((600, 800)) == (448, 576)
    assert b.assign((1920, 1080)) == (640, 384)
    assert b.assign((10000, 100)) == (1024, 128)  # clamped to the widest bucket
    for size in [(800, 600), (1920, 1080), (333, 777)]:
        bw, bh = b.assign(size)
        best = min(abs(np.log(w / h) - np.log(size[0] / size[1])) for w, h in b.sizes)
        assert abs(np.log(bw / bh) - np.log(size[0] / size[1])) == pytest.approx(best)


def test_no_upscale_keeps_small_images_small():
    b = make_buckets(512, no_upscale=True)
    assert b.assign((1000, 1000)) == (512, 512)  # big images as usual
    bw, bh = b.assign((300, 200))
    assert (bw, bh) == (256, 192) and upscale_factor((300, 200), (bw, bh)) <= 1
    assert b.assign((40, 40)) == (64, 64)  # a bucket is at least one step
    assert make_buckets(512).assign((300, 200)) == (640, 384)  # upscaled x2.1 without the option


def test_plan_counts_most_used_first():
    b = make_buckets(512)
    plan = b.plan([(512, 512), (1000, 1000), (800, 600), None, (640, 480)])
    assert plan == {(576, 448): 2, (512, 512): 2}
    assert list(plan)[0] == (512, 512) or list(plan.values()) == [2, 2]


@pytest.mark.parametrize("size,bucket", [((640, 480), (576, 448)), ((100, 300), (448, 576)), ((512, 512), (512, 512)),
                                         ((4000, 100), (1024, 128)), ((7, 5), (64, 64))])
def test_resize_to_bucket_is_exact(size, bucket):
    img = Image.new("RGB", size, (10, 20, 30))
    out = resize_to_bucket(img, bucket)
    assert out.size == bucket and out.mode == "RGB"
    out, (top, left) = resize_to_bucket(img, bucket, center_crop=False, rng=random.Random(1), return_crop=True)
    (rw, rh), _ = crop_for_bucket(size, bucket)
    assert out.size == bucket and 0 <= top <= rh - bucket[1] and 0 <= left <= rw - bucket[0]


def test_center_and_random_crops():
    img = Image.new("RGB", (200, 100))
    img.paste((255, 0, 0), (0, 0, 100, 100))  # left half red, right half black
    out, crop = resize_to_bucket(img, (64, 64), center_crop=True, return_crop=True)
    assert crop == (0, 32)  # 200x100 -> 128x64, centre 64 columns start at 32
    assert out.getpixel((0, 32))[0] > 200 and out.getpixel((63, 32))[0] < 50
    crops = {crop_for_bucket((200, 100), (64, 64), False, random.Random(s))[1] for s in range(30)}
    assert len(crops) > 5 and all(t == 0 and 0 <= l <= 64 for t, l in crops)
    g = np.random.default_rng(0)
    assert crop_for_bucket((200, 100), (64, 64), False, g)[1] == crop_for_bucket(
        (200, 100), (64, 64), False, np.random.default_rng(0))[1]
