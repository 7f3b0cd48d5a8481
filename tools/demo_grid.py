"""The labelled grid of demo generations shown in the README (docs/images/demo_grid.png).

    python -m tools.demo_grid [--out docs/images/demo_grid.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from lora_studio.core.demo import demo_model_path, renderer
from lora_studio.core.io import write_with

CELL, LABEL_W, HEAD_H, GAP = 96, 64, 40, 24


def generate(name: str, steps: int = 20, guidance: float = 5.0) -> dict[tuple[str, str], Image.Image]:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionPipeline if name == "demo" else StableDiffusionXLPipeline
    pipe = cls.from_pretrained(demo_model_path(name), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    keys = [(c, s) for c in renderer.COLOURS for s in renderer.SHAPES]
    images = pipe([f"a {c} {s}" for c, s in keys], num_inference_steps=steps, guidance_scale=guidance,
                  generator=[torch.Generator().manual_seed(i) for i in range(len(keys))]).images
    return dict(zip(keys, images))


def make_grid(out: str | Path, models=("demo", "demo-xl")) -> Path:
    colours, shapes = list(renderer.COLOURS), list(renderer.SHAPES)
    panel_w = LABEL_W + CELL * len(shapes)
    width = panel_w * len(models) + GAP * (len(models) - 1)
    height = HEAD_H * 2 + CELL * len(colours)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for m, name in enumerate(models):
        x0 = m * (panel_w + GAP)
        draw.text((x0 + LABEL_W, 8), f'{name}: "a {{colour}} {{shape}}", 20 steps, guidance 5, seed = cell index',
                  fill="black")
        for j, s in enumerate(shapes):
            draw.text((x0 + LABEL_W + j * CELL + 6, HEAD_H + 14), s, fill="black")
        images = generate(name)
        for i, c in enumerate(colours):
            draw.text((x0 + 4, HEAD_H * 2 + i * CELL + CELL // 2 - 6), c, fill="black")
            for j, s in enumerate(shapes):
                tile = images[(c, s)].resize((CELL, CELL), Image.Resampling.LANCZOS)
                grid.paste(tile, (x0 + LABEL_W + j * CELL, HEAD_H * 2 + i * CELL))
    out = Path(out)
    write_with(out, lambda tmp: grid.save(tmp, format="PNG", optimize=True))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/images/demo_grid.png")
    print(make_grid(p.parse_args().out))
