"""The main job on the embedded default: DreamBooth-LoRA with prior preservation on the demo subject set
and the ``demo`` model, then a before/after grid, a loss plot and the judge's scores.

``run_demo(out, emit, stop) -> summary``; ``lora-studio demo`` and the app both call it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from lora_studio.core.events import Finished
from lora_studio.core.training import demo_quality as _dq

MODEL = "demo"
SUBJECT_PROMPT = _dq.SUBJECT_PROMPT
CLASS_PROMPT = _dq.CLASS_PROMPT
GRID_WEIGHTS = _dq.WEIGHTS
GRID_SEEDS = 4
JUDGE_SEEDS = _dq.JUDGE_SEEDS
GEN_STEPS = _dq.GEN_STEPS
GUIDANCE = _dq.GUIDANCE


def demo_config(out: Path, **overrides):
    return _dq.recipe_config("subject", MODEL, out, **overrides)


def run_demo(out: str | Path, emit: Callable | None = None, stop=None, judge_seeds: int = JUDGE_SEEDS,
             **overrides) -> dict[str, Any]:
    """Train, preview, plot, judge; write everything to ``out``; return (and emit) the summary."""
    import torch

    from lora_studio.core.inference.engine import PreviewEngine

    emit = emit if emit is not None else (lambda event: None)
    out = Path(out)
    t0 = time.perf_counter()
    # demo_quality trains the subject recipe and judges it; the same engine then draws the grid's last cells.
    engine = PreviewEngine(MODEL, device="cuda" if torch.cuda.is_available() else "cpu", dtype=torch.float32)
    report = _dq.train_and_judge("subject", MODEL, out, judge_seeds, emit=emit, stop=stop, engine=engine,
                                 keep_images=True, **overrides)
    config = report["config"]
    summary: dict[str, Any] = {
        "model": MODEL, "instance_prompt": SUBJECT_PROMPT, "class_prompt": CLASS_PROMPT,
        "adapter": report["adapter"], "kohya": report.get("kohya"), "steps": report["steps"],
        "rank": config["rank"], "alpha": config["lora_alpha"], "class_images": report["class_images"],
        "final_loss": report["final_loss"], "train_seconds": report["train_seconds"], "stopped": report["stopped"],
    }
    if "scores" in report:
        summary.update({k: report[k] for k in ("judge_seeds", "scores", "bars", "passed", "all_passed")})
        grid = _grid(engine, report, stop)
        if grid is not None:
            grid_path = out / "before_after.png"
            _save_png(grid_path, grid)
            summary["grid"] = str(grid_path)
    loss_path = out / "loss.png"
    _save_png(loss_path, loss_plot(report["loss_history"], title=f"demo DreamBooth-LoRA, rank {config['rank']}"))
    summary["loss_plot"] = str(loss_path)
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    summary["summary"] = str(out / "summary.json")
    from lora_studio.core.io import write_text

    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    emit(Finished(summary))
    return summary


def _grid(engine, report, stop):
    """Both prompts at LoRA weight 0 / 0.5 / 1 on the first seeds: judged pictures where there are some."""
    from lora_studio.core.inference.engine import PreviewRequest, labelled_grid

    stop = stop.is_set if hasattr(stop, "is_set") else stop
    judged = report["images"]  # by score name, e.g. "subject_at_0.5"
    seeds = list(range(min(GRID_SEEDS, report["judge_seeds"])))
    name = engine.add_lora(report["adapter"], "demo", 1.0)
    rows = []
    for prompt, prefix in ((SUBJECT_PROMPT, "subject_at_"), (CLASS_PROMPT, "class_prompt_subject_at_")):
        for w in GRID_WEIGHTS:
            cells = judged.get(f"{prefix}{w:g}")
            if cells is None:
                engine.set_weights({name: w})
                cells = [engine.generate(PreviewRequest(prompt, seed=s, steps=GEN_STEPS, guidance=GUIDANCE), stop=stop)
                         for s in seeds]
                if any(c is None for c in cells):
                    return None
            rows.append((f'"{prompt}"  LoRA {w:g}', cells[: len(seeds)]))
    return labelled_grid(rows, [f"seed {s}" for s in seeds])


def _save_png(path: Path, image) -> None:
    from lora_studio.core.io import write_with

    write_with(path, lambda tmp: image.save(tmp, format="PNG"))


# ------------------------------------------------------------------------------------------ loss plot
def loss_plot(history: list, title: str = "", size=(720, 400)):
    """The loss per step (light) and its running mean (dark), axes with ticks: drawn with PIL alone."""
    import math

    from PIL import Image, ImageDraw, ImageFont

    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 64, 16, 30, 40
    pw, ph = w - left - right, h - top - bottom
    draw.text((left, 8), title or "training loss", fill="black", font=font)
    draw.rectangle((left, top, left + pw, top + ph), outline=(90, 90, 90))
    points = [(int(s), float(v)) for s, v in history if v is not None and math.isfinite(float(v))]
    if not points:
        draw.text((left + 10, top + 10), "no steps", fill="black", font=font)
        return img
    steps = [s for s, _ in points]
    vals = [v for _, v in points]
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad

    def xy(s, v):
        return left + (s - s0) / (s1 - s0) * pw, top + (hi - v) / (hi - lo) * ph

    for i in range(5):  # y ticks and grid lines
        v = lo + (hi - lo) * i / 4
        _, y = xy(s0, v)
        draw.line((left, y, left + pw, y), fill=(232, 232, 232))
        draw.text((4, y - 6), f"{v:.3g}", fill="black", font=font)
    for i in range(5):  # x ticks
        s = s0 + (s1 - s0) * i / 4
        x, _ = xy(s, lo)
        draw.line((x, top + ph, x, top + ph + 4), fill="black")
        draw.text((x - 10, top + ph + 8), f"{int(round(s))}", fill="black", font=font)
    draw.text((left + pw // 2 - 12, h - 16), "step", fill="black", font=font)
    if len(points) > 1:
        draw.line([xy(s, v) for s, v in points], fill=(160, 190, 235), width=1)
        k = max(1, len(vals) // 20)
        smooth = [sum(vals[max(0, i - k + 1): i + 1]) / len(vals[max(0, i - k + 1): i + 1]) for i in range(len(vals))]
        draw.line([xy(s, v) for s, v in zip(steps, smooth)], fill=(25, 70, 160), width=2)
    else:
        x, y = xy(*points[0])
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(25, 70, 160))
    return img
