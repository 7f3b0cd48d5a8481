"""The demo world's procedural renderer: seeded, deterministic, captioned 64x64 images.

Three kinds of picture come out of it:
- ``base``: ordinary shapes in flat colours on plain backgrounds, with varied captions (the world the demo
  models learn). It never contains the subject nor the style below. World 2 (``world=2``, not shipped; see
  docs/demo_world.md) adds variety: named colours a little jittered, some shapes in any hue, some split into
  two hues, some with a dark outline, captioned by their shape only; never the subject's make (two hues *and* a
  ring).
- ``subject``: one new object, a disk split into a magenta and a lime half inside a dark ring, for
  DreamBooth ("a photo of sks shape"; class prompt "a shape").
- ``style``: ordinary shapes with a striped "zebra" fill ("a red circle in zebra style").
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass, field, replace
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
SUBJECT_COLOURS = ((230, 40, 160), (165, 230, 40))  # magenta and lime: named in no base caption
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
# Pictures whose colour has no name in the world (any hue, two hues) are captioned by their shape only.
_SHAPE_TEMPLATES = ("a {shape}", "a photo of a {shape}", "a {shape} on a {background} background", "a {size} {shape}",
                    "a picture of a {shape}")
# World 2's variety: shares of pictures in any hue, split into two hues, and with a dark outline.
FREE_HUE, TWO_TONE, OUTLINE = 0.22, 0.12, 0.15
JITTER = 14  # named colours vary by up to this much per channel


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
    fill: tuple | None = None  # the RGB actually drawn (None: the named colour's)
    fill2: tuple | None = None  # the second half's RGB of a two-tone shape
    outline: bool = False  # a dark outline (the subject's ring, on any shape)
    ring: tuple | None = None  # the subject's ring colour (None: dark); another one makes a near miss for the judge


def _rng(seed: int, index: int, kind: str) -> np.random.Generator:
    salt = {"base": 0, "subject": 1, "style": 2}[kind]
    return np.random.default_rng([int(seed), int(index), salt])


def _size_word(radius: float) -> str:
    return "small" if radius < 16 else "large" if radius > 21 else "medium"


def sample_scene(seed: int, index: int, kind: str = "base", caption_mode: str | None = None, world: int = 1) -> Scene:
    """The attributes and caption of picture ``index`` of the stream ``seed`` (pure function of its inputs).

    world: 1 is the shipped world; 2 adds world 2's variety to the base pictures (the module's docstring).

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
    # World 2's variety, drawn after everything above: world 1 and the shipped sets keep their pixels.
    variety, outline_draw = float(rng.random()), float(rng.random())
    hues, tone, jitter = rng.random(2), rng.uniform(0.6, 0.95, size=4), rng.integers(-JITTER, JITTER + 1, size=3)
    if kind == "subject":
        scene = Scene(kind, None, None, background, radius, cx, cy, rotation, SUBJECT_PROMPT)
    else:
        scene = Scene(kind, shape, colour, background, radius, cx, cy, rotation)
        if kind == "style":
            scene.caption = f"a {colour} {shape} in {STYLE_WORD}"
        else:
            if world >= 2:
                if variety < FREE_HUE + TWO_TONE:  # a colour without a name: any hue, or two of them
                    scene.colour = None
                    scene.fill = hue_rgb(hues[0], tone[0], tone[1])
                    if variety >= FREE_HUE:
                        scene.fill2 = hue_rgb(hues[1], tone[2], tone[3])
                else:
                    scene.fill = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(COLOURS[colour], jitter))
                # never both two hues and an outline: that is the subject's make
                scene.outline = scene.fill2 is None and outline_draw < OUTLINE
            mode = caption_mode or ("empty" if mode_draw < 0.10 else "class" if mode_draw < 0.18
                                    else "partial" if mode_draw < 0.30 else "full")
            templates = {"empty": ("",), "class": _CLASS_TEMPLATES, "partial": _PARTIAL_TEMPLATES,
                         "full": _FULL_TEMPLATES}[mode]
            if scene.colour is None and mode in ("partial", "full"):
                templates = _SHAPE_TEMPLATES
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


def hue_rgb(hue: float, saturation: float, value: float) -> tuple:
    """An RGB triple (0-255) from HSV in [0, 1]."""
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def hue_of(rgb: tuple) -> float:
    """The hue in [0, 1) of an RGB triple (0-255)."""
    return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]


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


def _half_plane(scene: Scene) -> Image.Image:
    # The half of the picture on one side of a line through the shape's centre (the split of a two-tone shape).
    big = SIZE * _SS
    a = math.radians(90 + scene.rotation * 3)
    dx, dy, far = math.cos(a), math.sin(a), 4 * big
    cx, cy = scene.cx * _SS, scene.cy * _SS
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon([(cx + dx * far, cy + dy * far), (cx - dx * far, cy - dy * far),
                                  (cx - dx * far - dy * far, cy - dy * far + dx * far),
                                  (cx + dx * far - dy * far, cy + dy * far + dx * far)], fill=255)
    return mask


def render_scene(scene: Scene) -> Image.Image:
    big = SIZE * _SS
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    if scene.kind == "subject":
        cx, cy, r = scene.cx * _SS, scene.cy * _SS, scene.radius * _SS
        first, second = (scene.fill, scene.fill2) if scene.fill else SUBJECT_COLOURS  # other colours: the judge's near misses
        draw = ImageDraw.Draw(img)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=scene.ring or STRIPE_COLOUR)
        inner = r * 0.8
        a = scene.rotation * 3  # the split line leans a little differently in each picture
        draw.pieslice([cx - inner, cy - inner, cx + inner, cy + inner], 90 + a, 270 + a, fill=first)
        draw.pieslice([cx - inner, cy - inner, cx + inner, cy + inner], 270 + a, 450 + a, fill=second)
    else:
        colour = Image.new("RGB", (big, big), scene.fill or COLOURS[scene.colour])
        if scene.kind == "style":
            yy, xx = np.mgrid[0:big, 0:big]
            stripes = ((xx + yy) // (4 * _SS)) % 2 == 1
            arr = np.asarray(colour).copy()
            arr[stripes] = STRIPE_COLOUR
            colour = Image.fromarray(arr)
        inside = scene
        if scene.outline:  # the same shape in the dark colour, the fill drawn smaller on top: a ring
            img.paste(Image.new("RGB", (big, big), STRIPE_COLOUR), (0, 0), _mask(scene.shape, scene))
            inside = replace(scene, radius=scene.radius * 0.8)
        mask = _mask(scene.shape, inside)
        img.paste(colour, (0, 0), mask)
        if scene.fill2 is not None:
            half = Image.fromarray(np.minimum(np.asarray(mask), np.asarray(_half_plane(scene))))
            img.paste(Image.new("RGB", (big, big), scene.fill2), (0, 0), half)
    return img.resize((SIZE, SIZE), Image.Resampling.BOX)


def render(seed: int, index: int, kind: str = "base", caption_mode: str | None = None,
           world: int = 1) -> tuple[Image.Image, Scene]:
    scene = sample_scene(seed, index, kind, caption_mode, world)
    return render_scene(scene), scene


def render_array(seed: int, start: int, count: int, kind: str = "base", world: int = 1) -> tuple[np.ndarray, list[Scene]]:
    """``count`` pictures as a uint8 array (count, 64, 64, 3) and their scenes."""
    out = np.empty((count, SIZE, SIZE, 3), np.uint8)
    scenes = []
    for i in range(count):
        img, scene = render(seed, start + i, kind, world=world)
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
