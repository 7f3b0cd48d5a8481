"""Judged quality of LoRAs trained on the demo models (issue 4): the subject and the zebra style, SD 1.x and SDXL.

Each slow test trains the shipped recipe (``core/demo/recipe.py``) on CPU, generates the judged sets with
the PreviewEngine on 16 seeds and checks the issue's bars. The subject run on ``demo`` is the
``lora-studio demo`` job itself and is judged in tests/e2e/test_demo.py.
"""

from __future__ import annotations

import pytest

from lora_studio.core.demo import quality, recipe


def test_recipes_build_valid_configs(tmp_path):
    for kind in recipe.KINDS:
        for model in recipe.MODELS:
            cfg = recipe.recipe_config(kind, model, tmp_path / f"{kind}-{model}")
            assert cfg.pretrained_model_name_or_path == model
            assert cfg.mode == ("dreambooth" if kind == "subject" else "style")
            assert cfg.with_prior_preservation == (kind == "subject")
            assert cfg.output_dir == str(tmp_path / f"{kind}-{model}" / "lora")
    cfg = recipe.recipe_config("style", "demo", tmp_path, rank=4)
    assert cfg.rank == 4 and cfg.alpha == 4.0  # a changed rank keeps the recipe's scale


def test_unknown_kind_or_model_is_refused(tmp_path):
    from lora_studio.errors import LoraStudioError

    with pytest.raises(LoraStudioError, match="kind"):
        recipe.recipe_config("portrait", "demo", tmp_path)
    with pytest.raises(LoraStudioError, match="model"):
        recipe.recipe_config("style", "sd15", tmp_path)


def test_style_prompts_cover_every_shape_and_colour():
    from lora_studio.core.demo.judge import parse_prompt
    from lora_studio.core.demo.renderer import COLOURS, SHAPES

    prompts = quality.style_prompts(16)
    parsed = [parse_prompt(p) for p in prompts]
    assert {p["shape"] for p in parsed} == set(SHAPES)
    assert {p["colour"] for p in parsed} == set(COLOURS)
    assert all(p["style"] and not p["subject"] for p in parsed)
    assert len(set(prompts)) == 16


def test_bars_are_checked_both_ways():
    ok = quality.check_bars("style", "demo", {"style_at_0": 0.0, "style_at_0.5": 0.5, "style_at_1": 0.9})
    assert ok["all_passed"] and ok["passed"]["rises_with_weight"]
    falling = quality.check_bars("style", "demo", {"style_at_0": 0.0, "style_at_0.5": 0.95, "style_at_1": 0.9})
    assert not falling["passed"]["rises_with_weight"] and not falling["all_passed"]
    weak = quality.check_bars("style", "demo-xl", {"style_at_0": 0.0, "style_at_0.5": 0.3, "style_at_1": 0.55})
    assert not weak["passed"]["style_at_1"]
    leaky = quality.check_bars("subject", "demo", {"subject_at_1": 0.9, "subject_at_0": 0.0,
                                                   "class_prompt_subject_at_1": 0.25})
    assert not leaky["passed"]["class_prompt_subject_at_1"] and not leaky["all_passed"]


def test_subject_blend_bar_reads_the_continuous_score():
    shares = {"subject_at_1": 0.9, "subject_at_0.5": 0.0, "subject_at_0": 0.0, "class_prompt_subject_at_1": 0.0}
    rising = quality.check_bars("subject", "demo", shares, {"subject_at_0": 0.02, "subject_at_0.5": 0.4,
                                                            "subject_at_1": 0.9})
    assert rising["all_passed"] and rising["passed"]["rises_with_weight"]
    cliff = quality.check_bars("subject", "demo", shares, {"subject_at_0": 0.02, "subject_at_0.5": 0.02,
                                                           "subject_at_1": 0.9})
    assert not cliff["passed"]["rises_with_weight"] and not cliff["all_passed"]
    xl = quality.check_bars("subject", "demo-xl", dict(shares, subject_at_1=0.65))
    assert not xl["passed"]["subject_at_1"]  # demo-xl's bar is 70% (issue 23)


def _judged(kind, model, tmp_path):
    report = quality.train_and_judge(kind, model, tmp_path / f"{kind}-{model}", judge_seeds=16)
    assert not report["stopped"] and report["judge_seeds"] == 16
    return report


@pytest.mark.slow
@pytest.mark.parametrize("model, bar", [("demo", 0.8), ("demo-xl", 0.6)])
def test_style_lora_meets_the_bars(model, bar, tmp_path):
    report = _judged("style", model, tmp_path)
    s = report["scores"]
    assert s["style_at_0"] <= s["style_at_0.5"] <= s["style_at_1"] and s["style_at_1"] > s["style_at_0"], s
    assert s["style_at_1"] >= bar, s
    assert report["all_passed"], report["passed"]


@pytest.fixture(scope="module")
def subject_xl(tmp_path_factory):
    return _judged("subject", "demo-xl", tmp_path_factory.mktemp("subject-xl"))


@pytest.mark.slow
def test_subject_lora_on_demo_xl_shows_the_subject_only_with_the_token(subject_xl):
    s = subject_xl["scores"]
    assert s["subject_at_0"] <= 0.1 and s["class_prompt_subject_at_1"] <= 0.2, s
    # demo-xl's bar (70% at weight 1; training seeds 0-4 gave 0.75-0.94 on this CPU and on an H100) and the blend
    assert s["subject_at_1"] >= recipe.BARS[("subject", "demo-xl")]["subject_at_1"][1], s
    assert subject_xl["all_passed"], subject_xl["passed"]


def _unconditional_drift(adapter, model="demo") -> float:
    """Mean |LoRA - base| of the UNet's empty-prompt prediction on noisy latents of the style set (LoRA weight 1)."""
    import numpy as np
    import torch
    from PIL import Image

    from lora_studio.core.demo import demo_dataset_path
    from lora_studio.core.inference.engine import PreviewEngine

    engine = PreviewEngine(model, device="cpu", dtype=torch.float32)
    pipe = engine.pipe
    files = sorted(demo_dataset_path("style").glob("*.png"))[:4]
    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32))
                          for f in files]).permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        embeds = pipe.encode_prompt("", "cpu", 1, False)[0].expand(len(files), -1, -1)
        from diffusers import DDPMScheduler

        sched = DDPMScheduler.from_config(pipe.scheduler.config)
        t = torch.tensor([100, 400, 700, 950])
        noisy = sched.add_noise(latents, torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)), t)
        base = pipe.unet(noisy, t, embeds).sample
        engine.add_lora(adapter, "x", 1.0)
        engine._apply()
        lora = pipe.unet(noisy, t, embeds).sample
    return float((lora - base).abs().mean())


@pytest.mark.slow
def test_preserve_unconditional_keeps_the_empty_prompt_prediction(tmp_path):
    """The same short style run with and without the term: the term holds the empty prompt near the base."""
    import torch

    from lora_studio.core.training import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        drift = {}
        for weight in (0.0, 4.0):
            cfg = recipe.recipe_config("style", "demo", tmp_path / f"w{weight:g}", max_train_steps=60,
                                   preserve_unconditional=weight)
            drift[weight] = _unconditional_drift(train(cfg)["adapter_path"])
    finally:
        torch.set_num_threads(threads)
    assert drift[0.0] > 0.01, drift  # the comparison can fail: without the term the empty prompt moves
    assert drift[4.0] < 0.5 * drift[0.0], drift
