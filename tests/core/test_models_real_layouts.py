"""Full-size SD 1.x / SD 2.x / SDXL single files (random weights, original layout) load offline with the bundled configs.

Needs ~8 GB of RAM and ~7 GB of disk per family, so it runs only with LORA_STUDIO_REAL_LAYOUTS=1
(done by hand when the bundled configs or diffusers change; last run: all three pass, CPU, diffusers 0.42.1).
"""

import json
import os
import types

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not os.environ.get("LORA_STUDIO_REAL_LAYOUTS"),
                                                   reason="set LORA_STUDIO_REAL_LAYOUTS=1 (needs ~8 GB RAM)")]


@pytest.mark.parametrize("family,variant,prediction", [("sd1", "base", "epsilon"), ("sd2", "v", "v_prediction"),
                                                       ("sdxl", "base", "epsilon")])
def test_full_size_single_file_loads_offline(tmp_path, monkeypatch, family, variant, prediction):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lora_studio.core.models.loader import load_pipeline, resolve_model, shipped_config_dir
    from lora_studio.core.models.original_layout import pipeline_to_original

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = shipped_config_dir(family, variant)
    with init_empty_weights():  # shapes only; the file gets small random weights
        ns = types.SimpleNamespace(
            unet=UNet2DConditionModel.from_config(json.loads((cfg / "unet/config.json").read_text())),
            vae=AutoencoderKL.from_config(json.loads((cfg / "vae/config.json").read_text())),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_json_file(str(cfg / "text_encoder/config.json"))),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig.from_json_file(
                str(cfg / "text_encoder_2/config.json"))) if family == "sdxl" else None)
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.02).half() for k, v in pipeline_to_original(ns).items()}
    path = tmp_path / f"{family}.safetensors"
    save_file(sd, str(path))
    del sd
    ref = resolve_model(path)
    assert (ref.family, ref.variant) == (family, variant)
    pipe = load_pipeline(path, torch_dtype=torch.float16 if family == "sdxl" else torch.float32)
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert pipe.scheduler.config.prediction_type == prediction
    if family != "sdxl":
        assert pipe("a cat", num_inference_steps=1, height=64, width=64).images[0].size == (64, 64)
