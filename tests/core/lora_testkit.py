"""Shared helpers for the LoRA / preview tests: real LoRAs made with peft on the demo architectures."""

from __future__ import annotations

import json
import warnings

import numpy as np
import torch

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1"]


_CACHE = {}


def pipeline(name="demo"):
    """A fresh copy of a demo pipeline (loaded once per test session; copies are cheap)."""
    import copy

    from lora_studio.core.models.loader import load_pipeline

    if name not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CACHE[name] = load_pipeline(name)
    return copy.deepcopy(_CACHE[name])


def make_lora(name, path, rank=4, alpha=8.0, seed=1, scale=0.25, text_encoders=True, metadata=True):
    """A diffusers-format LoRA file as the trainer saves it: peft adapters, random non-zero A and B."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    pipe = pipeline(name)
    torch.manual_seed(seed)
    cfg_u = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False, target_modules=UNET_TARGETS)
    cfg_t = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False, target_modules=TE_TARGETS)
    layers, packed = {}, {}
    models = [("unet", pipe.unet, cfg_u)]
    if text_encoders:
        models.append(("text_encoder", pipe.text_encoder, cfg_t))
        if getattr(pipe, "text_encoder_2", None) is not None:
            models.append(("text_encoder_2", pipe.text_encoder_2, cfg_t))
    for comp, model, cfg in models:
        inject_adapter_in_model(cfg, model, adapter_name="default")
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn_like(p) * scale / rank ** 0.5)
        layers[comp] = convert_state_dict_to_diffusers(get_peft_model_state_dict(model, adapter_name="default"))
        for k, v in cfg.to_dict().items():
            packed[f"{comp}.{k}"] = sorted(v) if isinstance(v, set) else v
    meta = {"format": "pt"}
    if metadata:
        meta["lora_adapter_metadata"] = json.dumps(packed, default=str)
        meta["lora_studio.base_family"] = "sdxl" if name == "demo-xl" else "sd1"
        meta["lora_studio.alpha"] = repr(float(alpha))
        meta["lora_studio.base_model"] = name
    from safetensors.torch import save_file

    tensors = {f"{comp}.{k}": v.detach().contiguous() for comp, sd in layers.items() for k, v in sd.items()}
    save_file(tensors, str(path), metadata=meta)
    return path


def render(pipe, seed=0, steps=3, prompt="a red circle on a blue background", **kw):
    g = torch.Generator("cpu").manual_seed(seed)
    out = pipe(prompt, num_inference_steps=steps, guidance_scale=5.0, generator=g, output_type="np",
               height=64, width=64, **kw).images[0]
    return np.asarray(out, dtype=np.float64)


def diff(a, b) -> float:
    """Mean absolute pixel difference on a 0..1 scale."""
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


def rel(a, b) -> float:
    """Relative difference of two tensors taken whole, |a - b| / |b|, in float32."""
    return float((a.float() - b.float()).norm() / b.float().norm())


def output_and_grads(unet, params, x, t, text):
    """One forward and backward of mean(output^2): the output and every trainable parameter's gradient (the
    parameters' .grad is cleared again, so calls compare)."""
    out = unet(x, t, text).sample
    out.pow(2).mean().backward()
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out.detach(), grads


def tiny_unet_with_lora(seed=0, device="cpu", dtype=torch.float32, channels=(32, 32), targets=("to_q", "to_v"),
                        alpha=4.0, **unet_kwargs):
    """A two-level UNet (cross-attention down and up, 8x8 latents) with a rank-4 peft LoRA whose B is not zero,
    so the adapter changes the output from the first step and gradients reach A too. Frozen base."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=channels, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=8, norm_num_groups=8, **unet_kwargs).to(device=device, dtype=dtype)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=alpha, init_lora_weights=False, target_modules=list(targets)))
    return unet, [p for p in unet.parameters() if p.requires_grad]
