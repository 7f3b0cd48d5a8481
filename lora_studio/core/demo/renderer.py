"""The demo world's procedural renderer: seeded, deterministic, captioned 64x64 images.

Three kinds of picture come out of it:
- ``base``: ordinary shapes in flat colours on plain backgrounds, with varied captions (the world the demo
  models learn). It never contains the subject nor the style below.
- ``subject``: one new object, a disk split into a magenta and a lime half inside a dark ring, for
  DreamBooth ("a photo of sks shape"; class prompt "a shape").
- ``style``: ordinary shapes with a striped "zebra" fill ("a red circle in zebra style").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
_SS = 4  # supersampling factor: shapes are drawn at 256x256 and reduced, for clean anti-aliased edges

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart")
COLOURS = {
    "red": (220, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 75, 230),
    "yellow": (245, 215, 30),
    "purple": (145, 50, 185),
    "cyan": (30, 200, 215),
}
BACKGROUNDS = {
    "white": (245, 245, 245),
    "black": (22, 22, 22),
    "gray": (128, 128, 128),
    "beige": (226, 212, 180),
}
SUBJECT_COLOURS = ((230, 40, 160), (165, 230, 40))  # magenta and lime: in no base picture
SUBJECT_PROMPT = "a photo of sks shape"
CLASS_PROMPT = "a shape"
STYLE_WORD = "zebra style"
STRIPE_COLOUR = (25, 25, 25)

_FULL_TEMPLATES = (
    "a {colour} {shape}",
    "a {colour} {shape} on a {background} background",
    "a photo of a {colour} {shape}",
    "a picture of a {colour} {shape} on a {background} background",
    "{colour} {shape}",
    "a drawing of a {colour} {shape}",
    "a {size} {colour} {shape}",
    "a {size} {colour} {shape} on a {background} background",
    "a photo of a {size} {colour} {shape} on {background}",
)
_CLASS_TEMPLATES = ("a shape", "a photo of a shape", "a picture of a shape", "a shape on a {background} background")
_PARTIAL_TEMPLATES = ("a {shape}", "a photo of a {shape}", "a {colour} shape", "a {shape} on a {background} background")


@dataclass
class Scene:
    kind: str  # "base", "subject" or "style"
    shape: str | None
    colour: str | None
    background: str
    radius: float  # in 64-pixel units
    cx: float
    cy: float
    rotation: float  # degrees
    caption: str = ""
    labels: dict = field(default_factory=dict)


def _rng(seed: int, index: int, kind: str) -> np.random.Generator:
    salt = {"base": 0, "subject": 1, "style": 2}[kind]
    return np.random.default_rng([int(seed), int(index), salt])


def _size_word(radius: float) -> str:
    return "small" if radius < 16 else "large" if radius > 21 else "medium"


def sample_scene(seed: int, index: int, kind: str = "base", caption_mode: str | None = None) -> Scene:
    """The attributes and caption of picture ``index`` of the stream ``seed`` (pure function of its inputs).

    caption_mode: None draws it (10% empty, 8% class caption, 12% partial, rest full), or force one of
    "full", "class", "partial", "empty".
    """
    rng = _rng(seed, index, kind)
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    backgrounds = list(BACKGROUNDS) if kind != "style" else ["white", "gray", "beige"]
    background = backgrounds[rng.integers(len(backgrounds))]
    radius = float(rng.uniform(11, 27))
    margin = radius + 2
    cx, cy = (float(v) for v in rng.uniform(margin, SIZE - margin, size=2))
    rotation = float(rng.uniform(-15, 15))
    mode_draw = float(rng.random())
    template_draw = int(rng.integers(1 << 30))
    if kind == "subject":
        scene = Scene(kind, None, None, background, radius, cx, cy, rotation, SUBJECT_PROMPT)
    else:
        scene = Scene(kind, shape, colour, background, radius, cx, cy, rotation)
        if kind == "style":
            scene.caption = f"a {colour} {shape} in {STYLE_WORD}"
        else:
            mode = caption_mode or ("empty" if mode_draw < 0.10 else "class" if mode_draw < 0.18
                                    else "partial" if mode_draw < 0.30 else "full")
            templates = {"empty": ("",), "class": _CLASS_TEMPLATES, "partial": _PARTIAL_TEMPLATES,
                         "full": _FULL_TEMPLATES}[mode]
            template = templates[template_draw % len(templates)]
            scene.caption = template.format(colour=colour, shape=shape, background=background,
                                            size=_size_word(radius))
    scene.labels = {
        "shape": scene.shape,
        "colour": scene.colour,
        "subject": kind == "subject",
        "style": kind == "style",
    }
    return scene


def _polygon(shape: str, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(-s, -s), (s, -s), (s, s), (-s, s)]
    if shape == "triangle":
        return [(r * math.cos(a), r * math.sin(a) + r * 0.15)
                for a in (-math.pi / 2, -math.pi / 2 + 2 * math.pi / 3, -math.pi / 2 + 4 * math.pi / 3)]
    if shape == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else r * 0.42
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((rr * math.cos(a), rr * math.sin(a) + r * 0.08))
        return pts
    if shape == "cross":
        w, s = r * 0.32, r * 0.95
        return [(-w, -s), (w, -s), (w, -w), (s, -w), (s, w), (w, w), (w, s), (-w, s), (-w, w), (-s, w), (-s, -w),
                (-w, -w)]
    if shape == "heart":
        pts = []
        for i in range(48):
            t = 2 * math.pi * i / 48
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((x * r / 16.5, (y + 2.5) * r / 16.5))
        return pts
    raise ValueError(shape)


def _mask(shape: str, scene: Scene) -> Image.Image:
    big = SIZE * _SS
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = scene.cx * _SS, scene.cy * _SS, scene.radius * _SS
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        return mask
    a = math.radians(scene.rotation)
    ca, sa = math.cos(a), math.sin(a)
    pts = [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in _polygon(shape, r)]
    draw.polygon(pts, fill=255)
    return mask


def render_scene(scene: Scene) -> Image.Image:
    big = SIZE * _SS
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    if scene.kind == "subject":
        cx, cy, r = scene.cx * _SS, scene.cy * _SS, scene.radius * _SS
        draw = ImageDraw.Draw(img)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=STRIPE_COLOUR)
        inner = r * 0.8
        a = scene.rotation * 3  # the split line leans a little differently in each picture
        draw.pieslice([cx - inner, cy - inner, cx + inner, cy + inner], 90 + a, 270 + a, fill=SUBJECT_COLOURS[0])
        draw.pieslice([cx - inner, cy - inner, cx + inner, cy + inner], 270 + a, 450 + a, fill=SUBJECT_COLOURS[1])
    else:
        colour = Image.new("RGB", (big, big), COLOURS[scene.colour])
        if scene.kind == "style":
            yy, xx = np.mgrid[0:big, 0:big]
            stripes = ((xx + yy) // (4 * _SS)) % 2 == 1
            arr = np.asarray(colour).copy()
            arr[stripes] = STRIPE_COLOUR
            colour = Image.fromarray(arr)
        img.paste(colour, (0, 0), _mask(scene.shape, scene))
    return img.resize((SIZE, SIZE), Image.Resampling.BOX)


def render(seed: int, index: int, kind: str = "base", caption_mode: str | None = None) -> tuple[Image.Image, Scene]:
    scene = sample_scene(seed, index, kind, caption_mode)
    return render_scene(scene), scene


def render_array(seed: int, start: int, count: int, kind: str = "base") -> tuple[np.ndarray, list[Scene]]:
    """``count`` pictures as a uint8 array (count, 64, 64, 3) and their scenes."""
    out = np.empty((count, SIZE, SIZE, 3), np.uint8)
    scenes = []
    for i in range(count):
        img, scene = render(seed, start + i, kind)
        out[i] = np.asarray(img)
        scenes.append(scene)
    return out, scenes


# Seeds of the shipped datasets (docs/demo_world.md lists them). Base training uses other streams.
SUBJECT_SEED, STYLE_SEED = 1001, 2002
SUBJECT_COUNT, STYLE_COUNT = 10, 16


def write_subject_set(folder: str | Path, count: int = SUBJECT_COUNT, seed: int = SUBJECT_SEED) -> list[Path]:
    """The DreamBooth set: images with ``.txt`` caption sidecars."""
    from lora_studio.core.io import write_text, write_with

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        img, scene = render(seed, i, "subject")
        path = folder / f"sks_{i:02d}.png"
        write_with(path, lambda tmp, im=img: im.save(tmp, format="PNG"))
        write_text(path.with_suffix(".txt"), scene.caption + "\n")
        paths.append(path)
    return paths


def write_style_set(folder: str | Path, count: int = STYLE_COUNT, seed: int = STYLE_SEED) -> list[Path]:
    """The style set: images with one ``metadata.jsonl`` (file_name, text)."""
    from lora_studio.core.io import write_text, write_with

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    for i in range(count):
        img, scene = render(seed, i, "style")
        path = folder / f"zebra_{i:02d}.png"
        write_with(path, lambda tmp, im=img: im.save(tmp, format="PNG"))
        rows.append(json.dumps({"file_name": path.name, "text": scene.caption}))
        paths.append(path)
    write_text(folder / "metadata.jsonl", "\n".join(rows) + "\n")
    return paths
