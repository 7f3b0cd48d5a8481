"""Image validation opens every image for real and names each problem; training-side loading fixes them."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lora_studio.core.dataset import (Dataset, check_image, load_training_image, make_buckets, to_rgb,
                                      validate_dataset)
from tests.image_samples import write_bad_images, write_good_images, write_png
from lora_studio.errors import LoraStudioError

ERRORS = {"unreadable", "truncated", "decompression_bomb"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    expected = write_bad_images(folder)
    good = write_good_images(folder)
    return folder, expected, good


def test_each_bad_kind_is_named_with_reason_and_fix(samples):
    folder, expected, _ = samples
    buckets = make_buckets(512)
    for name, kind in expected.items():
        problems, size = check_image(folder / name, name, buckets)
        assert [p.kind for p in problems] == [kind], name
        (p,) = problems
        assert p.file == name and p.message and p.advice and p.category == "image"
        assert p.severity == ("error" if kind in ERRORS else "warning"), name
        assert (size is None) == (kind in ERRORS), name


def test_good_images_have_no_problems(samples):
    folder, _, good = samples
    for name in good:
        assert check_image(folder / name, name, make_buckets(512)) == ([], Image.open(folder / name).size)


def test_validation_changes_no_file(samples):
    folder, _, _ = samples
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    ds = Dataset.open(folder)
    assert validate_dataset(ds, make_buckets(512)) is True
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()} == before


def test_rotated_size_is_upright_and_small_depends_on_resolution(samples):
    folder, _, _ = samples
    assert check_image(folder / "rotated.jpg")[1] == (480, 640)
    assert check_image(folder / "small.png", buckets=make_buckets(64))[0] == []
    (p,) = check_image(folder / "small.png", buckets=make_buckets(512, no_upscale=True))[0]
    assert p.kind == "too_small" and "without upscaling" in p.message


def test_sixteen_bit_rgb_and_opaque_alpha(tmp_path):
    write_png(tmp_path / "rgb16.png", 600, 600, bit_depth=16, color_type=2)
    assert [p.kind for p in check_image(tmp_path / "rgb16.png")[0]] == ["16bit"]
    Image.new("RGBA", (600, 600), (1, 2, 3, 255)).save(tmp_path / "opaque.png")
    (p,) = check_image(tmp_path / "opaque.png")[0]
    assert p.kind == "alpha" and "opaque" in p.message


def test_pixel_limit_is_respected(tmp_path, monkeypatch):
    Image.new("RGB", (640, 480)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 307200 px: over the limit, under twice it
    (p,) = check_image(tmp_path / "a.png")[0]
    assert p.kind == "decompression_bomb" and p.severity == "error"


def test_bomb_is_never_decoded(tmp_path):
    # 12000 x 12000 8-bit grey: 144 MB once decoded; between Pillow's warning and error limits.
    write_png(tmp_path / "bomb.png", 12000, 12000, bit_depth=8, color_type=0)
    code = ("import resource, sys; from lora_studio.core.dataset import check_image\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"problems, size = check_image({str(tmp_path / 'bomb.png')!r})\n"
            "grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
            "print(problems[0].kind, size, grew)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["decompression_bomb", "None"]
    assert int(out[2]) < 50_000  # KiB: nowhere near the 144 MB a decode would take


def test_validate_dataset_progress_and_stop(samples):
    folder, _, _ = samples
    ds = Dataset.open(folder)
    seen = []
    done = validate_dataset(ds, None, progress=lambda i, n: seen.append((i, n)), stop=lambda: len(seen) >= 3)
    assert done is False and seen == [(1, len(ds)), (2, len(ds)), (3, len(ds))]
    by_name = {it.name: it for it in ds}
    assert [p.kind for p in by_name["animated.png"].problems] == ["animated"]  # checked in natural order first
    validate_dataset(ds)  # again: image problems replace, not pile up
    assert [p.kind for p in by_name["animated.png"].problems] == ["animated"]


# ------------------------------------------------------------------------------- training-side loading
def test_load_training_image_fixes_every_warning_kind(samples):
    folder, expected, _ = samples
    for name, kind in expected.items():
        if kind in ERRORS:
            with pytest.raises(LoraStudioError, match=name):
                load_training_image(folder / name)
            continue
        im = load_training_image(folder / name)
        assert im.mode == "RGB", name
    assert load_training_image(folder / "rotated.jpg").size == (480, 640)
    alpha = np.asarray(load_training_image(folder / "alpha.png"))
    assert tuple(alpha[0, 0]) == (255, 255, 255)  # fully transparent corner -> white
    pal_src = Image.open(folder / "palette.png")
    transparent = np.argwhere(np.asarray(pal_src) == 0)
    assert len(transparent)
    y, x = transparent[0]
    assert tuple(np.asarray(load_training_image(folder / "palette.png"))[y, x]) == (255, 255, 255)
    gray = np.asarray(load_training_image(folder / "gray16.png"))
    assert tuple(gray[0, 0]) == (156, 156, 156) and tuple(gray[0, -1]) == (0, 0, 0)  # 40000/65535 of 255
    with Image.open(folder / "animated.png") as anim:
        first = anim.convert("RGB")
    assert np.array_equal(np.asarray(load_training_image(folder / "animated.png")), np.asarray(first))


def test_to_rgb_float_and_la():
    f = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F")
    assert to_rgb(f).getpixel((0, 0)) == (128, 128, 128)
    la = Image.new("LA", (2, 2), (10, 0))
    assert to_rgb(la).getpixel((0, 0)) == (255, 255, 255)


def test_thumbnail_is_small_upright_and_safe(samples):
    from lora_studio.core.dataset import thumbnail

    folder, expected, _ = samples
    for name, kind in expected.items():
        thumb = thumbnail(folder / name, 96)
        if kind in ERRORS:
            assert thumb is None, name
        else:
            assert thumb.mode == "RGB" and max(thumb.size) <= 96, name
    assert thumbnail(folder / "rotated.jpg", 64).size == (48, 64)  # portrait after EXIF rotation
