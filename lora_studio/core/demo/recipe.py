"""The demo's recipes: what `lora-studio demo`, the app's first run, the judge's runs and the tests train.

One recipe per (kind, model): ``recipe_values`` gives the config keys, ``recipe_config`` the checked
``TrainingConfig``, ``first_run_values`` what the Training tab shows on the app's first run. Nothing here
imports torch, so the GUI reads the same definition. Every attempt behind these numbers, its prediction and
its outcome: docs/demo_quality.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_studio.core.demo.renderer import CLASS_PROMPT, SUBJECT_PROMPT  # the demo datasets' own captions

KINDS = ("subject", "style")
MODELS = ("demo", "demo-xl")
STYLE_SUFFIX = "in zebra style"
SEED = 0  # the shipped training seed; `lora-studio demo --seed S` trains with another
# The blend the grid and the summary show: the judge's score at each LoRA weight.
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
GEN_STEPS = 20
# The guidance the judged pictures are made at, per kind: the subject held on more training seeds at 5 than at
# 7.5, the style needs 7.5 (guidance amplifies the stripes). Measured in docs/demo_quality.md.
GUIDANCE = {"subject": 5.0, "style": 7.5}
JUDGE_SEEDS = 16

# LoRA on the attention projections, the ResNet convolutions and the transformer's projections and
# feed-forward (LoCon-style): these tiny UNets keep their shape knowledge in the convolutions, so an
# attention-only LoRA mostly moves colours (docs/demo_world.md).
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]

# fp32 everywhere ("no"): what every judged run trained in, on the CPU and on the GPU (the app's default "auto" would
# take bf16 on a GPU, an unjudged change).
_COMMON = dict(resolution=64, checkpointing_steps=100_000, report_to="none", seed=SEED, enable_bucket=False,
               mixed_precision="no",
               lr_scheduler="constant", sample_steps=20, rank=8, lora_alpha=8.0, train_batch_size=4,
               target_modules=TARGETS)
# - subject: a text-encoder LoRA as well ('sks' was never trained, so the prompt itself has to learn to mean
#   the subject) and min-SNR gamma 2 (weights the noisy timesteps, where the ring and the split disk form);
#   a cosine decay from 1e-2 to 0 (a constant 5e-3 ended some seeds on "ring + one colour").
# - style: preserve_unconditional keeps the empty-prompt prediction at the base model's, so the stripes are
#   tied to "in zebra style" and guidance amplifies them (without it: 0.44 at best, with it 1.0).
_SUBJECT = dict(learning_rate=1e-2, lr_scheduler="cosine", max_train_steps=600, snr_gamma=2.0,
                train_text_encoder=True, text_encoder_lr=1e-3, num_class_images=32, prior_loss_weight=1.0)
_STYLE = dict(learning_rate=3e-3, max_train_steps=400, snr_gamma=5.0, preserve_unconditional=1.0)
RECIPES: dict[tuple[str, str], dict] = {
    # demo-xl's subject at 1e-2 overshot on some seeds (the share fell from weight 0.75 to 1); 3e-3 held on all
    ("subject", "demo"): _SUBJECT, ("subject", "demo-xl"): dict(_SUBJECT, learning_rate=3e-3),
    ("style", "demo"): _STYLE, ("style", "demo-xl"): dict(_STYLE),
}

# The bars. Subject: the token draws the subject, no LoRA and the class prompt do not, and the
# judge's continuous score rises with the weight. Style: the share rises with the weight.
BARS: dict[tuple[str, str], dict[str, tuple[str, float]]] = {
    ("subject", "demo"): {"subject_at_1": (">=", 0.8), "subject_at_0": ("<=", 0.1),
                          "class_prompt_subject_at_1": ("<=", 0.2)},
    ("subject", "demo-xl"): {"subject_at_1": (">=", 0.7), "subject_at_0": ("<=", 0.1),
                             "class_prompt_subject_at_1": ("<=", 0.2)},
    ("style", "demo"): {"style_at_1": (">=", 0.8), "style_at_0": ("<=", 0.1)},
    ("style", "demo-xl"): {"style_at_1": (">=", 0.6), "style_at_0": ("<=", 0.1)},
}


def check(kind: str, model: str) -> None:
    from lora_studio.errors import LoraStudioError

    if kind not in KINDS:
        raise LoraStudioError(f"unknown LoRA kind {kind!r}.", f"use one of: {', '.join(KINDS)}.")
    if model not in MODELS:
        raise LoraStudioError(f"no judged recipe for model {model!r}.", f"use one of: {', '.join(MODELS)}.")


def recipe_values(kind: str, model: str, out: str | Path, **overrides) -> dict[str, Any]:
    """The config keys of the (kind, model) recipe, outputs under ``out`` (``lora/``, ``class_images/``)."""
    from lora_studio.core.demo import demo_dataset_path

    check(kind, model)
    out = Path(out)
    kw: dict[str, Any] = dict(_COMMON, pretrained_model_name_or_path=model, output_dir=str(out / "lora"),
                              train_data_dir=str(demo_dataset_path(kind)))
    if kind == "subject":
        kw.update(mode="dreambooth", instance_prompt=SUBJECT_PROMPT, with_prior_preservation=True,
                  class_prompt=CLASS_PROMPT, class_data_dir=str(out / "class_images"))
    else:
        kw.update(mode="style")
    kw.update(RECIPES[(kind, model)])
    kw.update(overrides)
    if "rank" in overrides and "lora_alpha" not in overrides:
        kw["lora_alpha"] = float(kw["rank"])  # keep the recipe's scale (alpha = rank) when only the rank changes
    kw["target_modules"] = list(kw["target_modules"])
    return kw


def recipe_config(kind: str, model: str, out: str | Path, **overrides):
    """The ``TrainingConfig`` of a judged run: the recipe for (kind, model), outputs under ``out``."""
    from lora_studio.config import TrainingConfig

    return TrainingConfig(**recipe_values(kind, model, out, **overrides))


def first_run_values(out: str | Path) -> dict[str, Any]:
    """The Training tab's settings on the app's first run: `lora-studio demo`'s subject recipe on ``demo``.

    Live samples are added for the tab's gallery; they draw from their own seeded generator, so the adapter
    trained is the one `lora-studio demo` trains."""
    values = recipe_values("subject", "demo", out)
    values.update(validation_prompt=SUBJECT_PROMPT, validation_steps=150)
    return values
