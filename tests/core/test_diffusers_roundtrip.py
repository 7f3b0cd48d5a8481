"""What the engine saves loads in plain diffusers and draws the same picture as the app's own preview.

Issue 4: ``pipe.load_lora_weights(output_dir)`` gives the same image as the PreviewEngine for the same seed
(fp32, CPU, mean abs pixel difference < 1/255), for both families and for alpha != rank. The adapters here
also reach beyond attention (resnet convolutions, projections, feed-forwards) and into the text encoders,
because a mixed-up key style makes diffusers drop layers without a word.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from lora_studio.config import TrainingConfig
from lora_studio.core.demo import demo_dataset_path, demo_model_path
from lora_studio.core.training import train

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
PROMPT = "a blue square in zebra style"
SEED, STEPS, GUIDANCE = 5, 6, 7.5


def _train(model: str, out, rank=4, alpha=12.0):
    cfg = TrainingConfig(pretrained_model_name_or_path=model, train_data_dir=str(demo_dataset_path("style")),
                         output_dir=str(out), resolution=64, max_train_steps=3, rank=rank, lora_alpha=alpha,
                         learning_rate=2e-2, text_encoder_lr=2e-2, train_text_encoder=True,
                         target_modules=TARGETS, checkpointing_steps=100, report_to="none", seed=11,
                         sample_steps=2, enable_bucket=False)
    return train(cfg, lambda event: None)


def _lora_modules(module) -> set[str]:
    """Names of the layers that carry a LoRA after loading (peft's tuner layers)."""
    from peft.tuners.lora import LoraLayer

    return {name for name, m in module.named_modules() if isinstance(m, LoraLayer) and m.lora_A}


def _file_layers(path, component: str) -> set[str]:
    with safe_open(str(path), "pt") as f:
        keys = [k for k in f.keys() if k.startswith(component + ".")]
    layers = set()
    for key in keys:
        rest = key[len(component) + 1:]
        for marker in (".lora_A.", ".lora.down.", ".lora_linear_layer.down."):
            if marker in rest:
                layers.add(rest.split(marker)[0])
    return layers


def _diffusers_image(model_dir, lora_dir):
    from diffusers import DiffusionPipeline, EulerDiscreteScheduler

    pipe = DiffusionPipeline.from_pretrained(str(model_dir), torch_dtype=torch.float32)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_dir))
    image = pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                 generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
    return pipe, np.asarray(image, dtype=np.float32) / 255


def _engine_images(model: str, adapter):
    from lora_studio.core.inference.engine import PreviewEngine, PreviewRequest

    engine = PreviewEngine(model, device="cpu", dtype=torch.float32)
    engine.add_lora(adapter, "trained", 1.0)
    request = PreviewRequest(PROMPT, seed=SEED, steps=STEPS, guidance=GUIDANCE, scheduler="euler")
    with_lora = np.asarray(engine.generate(request), dtype=np.float32) / 255
    engine.set_weights({"trained": 0.0})
    without = np.asarray(engine.generate(request), dtype=np.float32) / 255
    return with_lora, without


@pytest.mark.slow
@pytest.mark.parametrize("model", ["demo", "demo-xl"])
def test_plain_diffusers_load_matches_the_preview_engine(model, tmp_path):
    result = _train(model, tmp_path / "out", rank=4, alpha=12.0)  # alpha != rank: scale 3
    adapter = result["adapter_path"]

    pipe, loaded = _diffusers_image(demo_model_path(model), tmp_path / "out")
    # Every layer in the file is live in diffusers' pipeline: nothing was dropped on the way.
    components = ["unet", "text_encoder"] + (["text_encoder_2"] if model == "demo-xl" else [])
    for component in components:
        in_file = _file_layers(adapter, component)
        assert in_file, component
        live = {name.removeprefix("base_model.model.") for name in _lora_modules(getattr(pipe, component))}
        assert in_file <= live, (component, sorted(in_file - live)[:5])
        assert any(t in name for name in in_file for t in ("conv1", "ff.net.2")) or component != "unet"

    engine_lora, engine_base = _engine_images(model, adapter)
    assert np.abs(loaded - engine_lora).mean() < 1 / 255
    # The comparison can fail: the adapter visibly changes the picture.
    assert np.abs(engine_lora - engine_base).mean() > 2 / 255


def test_alpha_is_what_makes_the_images_agree(tmp_path):
    """The same trained tensors saved as if alpha were the rank give a different picture (scale 1 vs 3)."""
    from safetensors.torch import load_file, save_file

    result = _train("demo", tmp_path / "out", rank=4, alpha=12.0)
    adapter = result["adapter_path"]
    with safe_open(adapter, "pt") as f:
        meta = f.metadata()
    assert meta["lora_studio.alpha"] == "12.0" and meta["lora_studio.rank"] == "4"
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    packed = json.loads(meta["lora_adapter_metadata"])
    alphas = [key for key in packed if key.endswith(".lora_alpha")]
    assert alphas and all(packed[key] == 12.0 for key in alphas)
    packed.update({key: 4 for key in alphas})
    meta["lora_adapter_metadata"] = json.dumps(packed)
    save_file(load_file(adapter), str(wrong / "pytorch_lora_weights.safetensors"), metadata=meta)

    _, right = _diffusers_image(demo_model_path("demo"), tmp_path / "out")
    _, scaled_wrong = _diffusers_image(demo_model_path("demo"), wrong)
    engine_lora, _ = _engine_images("demo", adapter)
    assert np.abs(right - engine_lora).mean() < 1 / 255
    assert np.abs(scaled_wrong - engine_lora).mean() > 1 / 255


def test_resume_puts_every_layer_back(tmp_path):
    """A checkpoint of an adapter with text-encoder and convolution layers resumes to the uninterrupted result."""
    from safetensors.torch import load_file

    common = dict(pretrained_model_name_or_path="demo-xl", train_data_dir=str(demo_dataset_path("style")),
                  resolution=64, max_train_steps=3, rank=4, lora_alpha=8.0, learning_rate=2e-2,
                  text_encoder_lr=2e-2, train_text_encoder=True, target_modules=TARGETS, checkpointing_steps=2,
                  report_to="none", seed=3, sample_steps=2, enable_bucket=False)
    full = train(TrainingConfig(output_dir=str(tmp_path / "full"), **common), lambda e: None)
    steps = []

    def record(event):
        if getattr(event, "phase", None) == "train" and hasattr(event, "step"):
            steps.append(event.step)

    split = TrainingConfig(output_dir=str(tmp_path / "split"), **common)
    first = train(split, record, stop=lambda: len(steps) >= 2)
    assert first["stopped"] and first["steps"] == 2
    second = train(split, lambda e: None, resume=True)
    a, b = load_file(full["adapter_path"]), load_file(second["adapter_path"])
    assert a.keys() == b.keys() and any(k.startswith("text_encoder_2.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
