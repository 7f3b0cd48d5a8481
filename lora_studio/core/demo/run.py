"""The main job on the embedded default: DreamBooth-LoRA with prior preservation on the demo subject set
and the ``demo`` model, then a before/after picture, a loss plot and the judge's scores.

``run_demo(out, emit, stop, seed) -> summary`` is what ``lora-studio demo`` runs. The recipe is ``recipe.py``'s,
the one the app's first run shows and trains from its Training tab.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from lora_studio.core.demo import quality
from lora_studio.core.demo.recipe import CLASS_PROMPT, GEN_STEPS, JUDGE_SEEDS, SEED, SUBJECT_PROMPT
from lora_studio.core.events import Finished

MODEL = "demo"


def run_demo(out: str | Path, emit: Callable | None = None, stop=None, seed: int = SEED,
             judge_seeds: int = JUDGE_SEEDS, **overrides) -> dict[str, Any]:
    """Train (training seed ``seed``), judge, draw; write everything to ``out``; return (and emit) the summary."""
    import torch

    from lora_studio.core.demo.before_after import before_after, verdict
    from lora_studio.core.inference.engine import PreviewEngine
    from lora_studio.core.io import write_text

    emit = emit if emit is not None else (lambda event: None)
    out = Path(out)
    t0 = time.perf_counter()
    engine = PreviewEngine(MODEL, device="cuda" if torch.cuda.is_available() else "cpu", dtype=torch.float32)
    report = quality.train_and_judge("subject", MODEL, out, judge_seeds, emit=emit, stop=stop, engine=engine,
                                     keep_images=True, seed=seed, **overrides)
    config = report["config"]
    summary: dict[str, Any] = {
        "model": MODEL, "seed": seed, "instance_prompt": SUBJECT_PROMPT, "class_prompt": CLASS_PROMPT,
        "adapter": report["adapter"], "kohya": report.get("kohya"), "steps": report["steps"],
        "rank": config["rank"], "alpha": config["lora_alpha"], "class_images": report["class_images"],
        "final_loss": report["final_loss"], "train_seconds": report["train_seconds"], "stopped": report["stopped"],
    }
    if "scores" in report:
        summary.update({k: report[k] for k in ("judge_seeds", "guidance", "scores", "subject_scores", "bars",
                                               "passed", "all_passed")})
        summary["judge_steps"] = GEN_STEPS
        summary["verdict"] = verdict(MODEL, report["scores"], report["passed"])
        grid = before_after(report["images"], report["scores"], report["subject_scores"], summary["verdict"])
        _save_png(out / "before_after.png", grid)
        summary["grid"] = str(out / "before_after.png")
    loss_path = out / "loss.png"
    _save_png(loss_path, loss_plot(report["loss_history"], title=f"demo DreamBooth-LoRA, rank {config['rank']}"))
    summary["loss_plot"] = str(loss_path)
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    summary["summary"] = str(out / "summary.json")
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    emit(Finished(summary))
    return summary


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
