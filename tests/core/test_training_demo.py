"""Pieces of the demo job that need no training: the PIL loss plot and the config it trains with."""

from __future__ import annotations

from lora_studio.core.training.demo import CLASS_PROMPT, SUBJECT_PROMPT, demo_config, loss_plot


def test_loss_plot_draws_the_curve_and_survives_nan_and_empty():
    history = [[s, 1.0 / s] for s in range(1, 101)]
    img = loss_plot(history, title="t")
    assert img.size == (720, 400)
    px = img.convert("RGB")
    dark_blue = sum(1 for p in px.getdata() if p == (25, 70, 160))
    assert dark_blue > 200  # the smoothed line is there
    assert loss_plot([[1, float("nan")], [2, 0.5]]).size == (720, 400)  # NaN points are skipped, not drawn
    assert loss_plot([]).size == (720, 400)


def test_demo_config_is_dreambooth_with_prior_preservation(tmp_path):
    cfg = demo_config(tmp_path)
    cfg.validate()
    assert cfg.mode == "dreambooth" and cfg.with_prior_preservation
    assert cfg.instance_prompt == SUBJECT_PROMPT and cfg.class_prompt == CLASS_PROMPT
    assert cfg.class_data_dir == str(tmp_path / "class_images") and cfg.pretrained_model_name_or_path == "demo"
