"""Pieces of the demo job that need no training: the recipe's one home, the loss plot, the before/after
picture's labels and verdict."""

from __future__ import annotations

import ast

import numpy as np
from PIL import Image

import lora_studio
from lora_studio.core.demo.recipe import CLASS_PROMPT, SUBJECT_PROMPT, first_run_values, recipe_config
from lora_studio.core.demo.run import loss_plot


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
    cfg = recipe_config("subject", "demo", tmp_path, seed=3)
    cfg.validate()
    assert cfg.mode == "dreambooth" and cfg.with_prior_preservation and cfg.seed == 3
    assert cfg.instance_prompt == SUBJECT_PROMPT and cfg.class_prompt == CLASS_PROMPT
    assert cfg.class_data_dir == str(tmp_path / "class_images") and cfg.pretrained_model_name_or_path == "demo"


def test_first_run_values_are_the_demo_recipe(tmp_path):
    values = first_run_values(tmp_path)
    cfg = recipe_config("subject", "demo", tmp_path)
    for key, value in values.items():
        if not key.startswith("validation_"):  # live samples: their own generator, the adapter is the same
            assert getattr(cfg, key) == value, key
    # trained in fp32 on every device, as every judged run was (the config's default "auto" is bf16 on a GPU)
    assert values["mixed_precision"] == cfg.mixed_precision == "no"


def _imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_training_knows_no_demo_recipe():
    training = lora_studio.core.__path__[0] + "/training"
    from pathlib import Path

    for path in Path(training).rglob("*.py"):
        assert not {m for m in _imported_modules(path) if m.startswith(("lora_studio.core.demo.recipe",
                                                                        "lora_studio.core.demo.quality",
                                                                        "lora_studio.core.demo.run"))}, path
    assert not (Path(training) / "demo.py").exists() and not (Path(training) / "demo_quality.py").exists()


def _word_gaps(label: str, min_gap: int = 5) -> int:
    """Blank gaps of at least ``min_gap`` columns inside a grid row's label: the spaces a reader sees."""
    from lora_studio.core.inference.engine import labelled_grid

    out = labelled_grid([(label, [Image.new("RGB", (64, 64), (200, 40, 40))])], ["seed 0"])
    a = np.asarray(out.convert("L"))
    band = a[a.shape[0] - 64 - 4:, : out.width - 64 - 8]  # the row's label, left of its picture
    ink = np.flatnonzero((band < 128).any(axis=0))
    return int((np.diff(ink) - 1 >= min_gap).sum())


def test_grid_labels_keep_their_spaces():
    assert _word_gaps("a photo of sks shape") == 4
    assert _word_gaps("aphotoofsksshape") == 0


def test_before_after_has_big_cells_every_weight_and_a_verdict():
    from lora_studio.core.demo.before_after import CELL, before_after, verdict
    from lora_studio.core.demo.recipe import WEIGHTS

    keys = [f"subject_at_{w:g}" for w in WEIGHTS] + ["class_prompt_subject_at_1"]
    images = {k: [Image.new("RGB", (64, 64), (40 * i, 90, 90)) for _ in range(4)] for i, k in enumerate(keys)}
    scores = dict.fromkeys(keys, 0.0) | {"subject_at_1": 0.875}
    continuous = {k: w / 1.0 for k, w in zip(keys, WEIGHTS)}
    passed = {"subject_at_1": True, "subject_at_0": True, "class_prompt_subject_at_1": True,
              "rises_with_weight": True}
    line = verdict("demo", scores, passed)
    assert line.startswith("PASSED") and "88%" in line and "bar 80%" in line
    assert verdict("demo", scores, dict(passed, subject_at_1=False)).startswith("MISSED")
    img = before_after(images, scores, continuous, line)
    assert CELL >= 2 * 64
    assert img.width >= 4 * CELL and img.height >= len(keys) * CELL
    # The verdict is drawn in green above the grid.
    top = np.asarray(img.convert("RGB"))[: CELL // 4]
    assert ((top[..., 1] > 100) & (top[..., 0] < 60)).any()
