"""Train a LoRA of kind ``subject`` or ``style`` on ``demo`` / ``demo-xl`` and let the judge score it.

``train_and_judge(kind, model, out) -> report`` is what ``lora-studio demo``, the quality tests and
``bench/demo_sweep.py`` share: the recipes and bars of ``recipe.py``, the judged prompt sets in
``judge_adapter``. Images come from the app's own ``PreviewEngine`` (the
LoRA fused at the slider weight), seeds 0..n-1, 20 Euler steps.

- subject: DreamBooth-LoRA with prior preservation on the demo subject set; judged are the share of
  pictures showing the subject and the judge's continuous subject score for "a photo of sks shape" at LoRA
  weight 0 / 0.25 / 0.5 / 0.75 / 1 and for the class prompt "a shape" at weight 1.
- style: a caption LoRA on the zebra set (``metadata.jsonl``); judged is the share of pictures in zebra
  style for "a <colour> <shape> in zebra style" (one colour/shape pair per seed) at weight 0 / 0.5 / 1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from lora_studio.core.demo.recipe import (BARS, CLASS_PROMPT, GEN_STEPS, GUIDANCE, JUDGE_SEEDS, STYLE_SUFFIX,
                                         SUBJECT_PROMPT, WEIGHTS, check, recipe_config)
from lora_studio.core.events import Finished, Progress, Started

STYLE_WEIGHTS = (0.0, 0.5, 1.0)


def style_prompts(n: int) -> list[str]:
    """One "a <colour> <shape> in zebra style" per seed, walking all 36 colour/shape pairs."""
    from lora_studio.core.demo.renderer import COLOURS, SHAPES

    colours = list(COLOURS)
    # Step through shapes faster than colours so 16 seeds already cover every shape and every colour.
    return [f"a {colours[i % len(colours)]} {SHAPES[(i + i // len(colours)) % len(SHAPES)]} {STYLE_SUFFIX}"
            for i in range(n)]


def judge_plan(kind: str, seeds: int, weights=None) -> list[tuple[str, str, float, list[str]]]:
    """``[(score name, label, weight, prompts by seed)]``: what is generated and judged."""
    plan = []
    weights = weights if weights is not None else (WEIGHTS if kind == "subject" else STYLE_WEIGHTS)
    if kind == "subject":
        for w in weights:
            plan.append((f"subject_at_{w:g}", SUBJECT_PROMPT, w, [SUBJECT_PROMPT] * seeds))
        plan.append(("class_prompt_subject_at_1", CLASS_PROMPT, 1.0, [CLASS_PROMPT] * seeds))
    else:
        prompts = style_prompts(seeds)
        for w in weights:
            plan.append((f"style_at_{w:g}", f"a <colour> <shape> {STYLE_SUFFIX}", w, prompts))
    return plan


def judge_adapter(kind: str, model: str, adapter: str | Path, seeds: int = JUDGE_SEEDS, guidance: float | None = None,
                  weights=None, emit: Callable | None = None, stop=None, engine=None,
                  keep_images: bool = False) -> dict[str, Any] | None:
    """Generate the judged sets with the PreviewEngine and score them; None if ``stop`` fired."""
    import torch

    from lora_studio.core.demo.judge import Judge
    from lora_studio.core.inference.engine import PreviewEngine, PreviewRequest

    check(kind, model)
    guidance = GUIDANCE[kind] if guidance is None else guidance
    emit = emit if emit is not None else (lambda event: None)
    should_stop = stop.is_set if hasattr(stop, "is_set") else (stop or (lambda: False))
    if engine is None:
        engine = PreviewEngine(model, device="cuda" if torch.cuda.is_available() else "cpu", dtype=torch.float32)
    name = engine.add_lora(adapter, "judged", 1.0)
    plan = judge_plan(kind, seeds, weights)
    total = sum(len(p) for *_, p in plan)
    emit(Started(total_steps=total, phase="generate", description=f"{kind} LoRA on {model}: pictures for the judge"))
    judge = Judge.load()
    scores: dict[str, float] = {}
    continuous: dict[str, float] = {}  # the judge's mean continuous subject score per set
    images: dict[str, list] = {}
    done, t0 = 0, time.perf_counter()
    for key, _label, w, prompts in plan:
        engine.set_weights({name: w})
        row = []
        for seed, prompt in enumerate(prompts):
            if should_stop():
                return None
            row.append(engine.generate(PreviewRequest(prompt, seed=seed, steps=GEN_STEPS, guidance=guidance)))
            done += 1
            rate = done / (time.perf_counter() - t0)
            emit(Progress(step=done, total=total, it_per_s=rate, eta_s=(total - done) / rate, phase="generate"))
        result = judge.score(row, prompts)
        scores[key] = result["subject_share" if kind == "subject" else "style_share"]
        continuous[key] = result["subject_score"]
        images[key] = row
    engine.remove_lora(name)
    report: dict[str, Any] = {"kind": kind, "model": model, "judge_seeds": seeds, "guidance": guidance,
                              "scores": scores, "subject_scores": continuous,
                              **check_bars(kind, model, scores, continuous),
                              "judge_seconds": round(time.perf_counter() - t0, 1)}
    if keep_images:
        report["images"] = images
        report["plan"] = [(key, label, w) for key, label, w, _ in plan]
    return report


def check_bars(kind: str, model: str, scores: dict[str, float],
               continuous: dict[str, float] | None = None) -> dict[str, Any]:
    """Which bars the scores pass; the blend bar (the score rises with the weight) where its sets were judged."""
    bars = BARS[(kind, model)]
    passed = {k: (scores[k] >= bar if op == ">=" else scores[k] <= bar) for k, (op, bar) in bars.items() if k in scores}
    shown = {k: f"{op} {bar}" for k, (op, bar) in bars.items()}
    if kind == "style" and all(f"style_at_{w:g}" in scores for w in STYLE_WEIGHTS):
        s0, s5, s1 = (scores[f"style_at_{w:g}"] for w in STYLE_WEIGHTS)
        passed["rises_with_weight"] = s0 <= s5 <= s1 and s1 > s0
        shown["rises_with_weight"] = "0 <= 0.5 <= 1, 1 > 0"
    if kind == "subject" and continuous and all(f"subject_at_{w:g}" in continuous for w in (0, 0.5, 1)):
        c0, c5, c1 = (continuous[f"subject_at_{w:g}"] for w in (0, 0.5, 1))
        passed["rises_with_weight"] = c0 < c5 <= c1
        shown["rises_with_weight"] = "subject score 0 < 0.5 <= 1"
    return {"bars": shown, "passed": passed, "all_passed": bool(passed) and all(passed.values())}


def train_and_judge(kind: str = "subject", model: str = "demo", out: str | Path = "lora-studio-judged",
                    judge_seeds: int = JUDGE_SEEDS, guidance: float | None = None, emit: Callable | None = None,
                    stop=None, engine=None, keep_images: bool = False, **overrides) -> dict[str, Any]:
    """Train the (kind, model) recipe (``overrides`` change any config key), judge it, return the report.

    Runs on the caller's torch threads: `lora-studio demo` takes every core (on a quiet 2-core CPU two threads
    train 16% faster than one), the app leaves one for the window, a sweep gives each process one.
    """
    from lora_studio.core.training import train

    t0, c0 = time.perf_counter(), time.process_time()
    cfg = recipe_config(kind, model, out, **overrides)
    emit_ = emit if emit is not None else (lambda event: None)
    result = train(cfg, lambda e: None if isinstance(e, Finished) else emit_(e), stop)
    train_s = time.perf_counter() - t0
    report: dict[str, Any] = {
        "kind": kind, "model": model, "adapter": result["adapter_path"], "kohya": result.get("kohya_path"),
        "steps": result["steps"],
        "stopped": result["stopped"], "final_loss": result["final_loss"], "class_images": result["class_images"],
        "fast_path": result.get("fast_path"),
        "train_seconds": round(train_s, 1), "train_cpu_seconds": round(time.process_time() - c0, 1),
        "config": _recipe_summary(cfg),
    }
    if not result["stopped"] and result.get("adapter_path"):
        judged = judge_adapter(kind, model, result["adapter_path"], judge_seeds, guidance, emit=emit_, stop=stop,
                               engine=engine, keep_images=keep_images)
        if judged is not None:
            report.update(judged)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    # CPU time of this process (with one thread: the wall time on an otherwise idle machine).
    report["total_cpu_seconds"] = round(time.process_time() - c0, 1)
    report["loss_history"] = result["loss_history"]
    return report


def _recipe_summary(cfg) -> dict[str, Any]:
    keys = ["rank", "lora_alpha", "learning_rate", "max_train_steps", "train_batch_size", "snr_gamma",
            "target_modules", "train_text_encoder", "text_encoder_lr", "num_class_images", "prior_loss_weight",
            "lr_scheduler", "lr_warmup_steps", "noise_offset", "max_grad_norm", "adam_weight_decay",
            "preserve_unconditional", "seed"]
    return {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}
