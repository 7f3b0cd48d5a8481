"""Fused self-attention q/k/v (on in the engine's fast path): the same training signal as the unfused fast LoRA forward."""

from __future__ import annotations

import pytest
import torch
from lora_testkit import tiny_unet_with_lora

from lora_studio.core.accel import compile_choice
from lora_studio.core.accel.fast_kernels import COMPILE_SETS, install_fast_lora
from lora_studio.core.accel.fast_qkv import install_fused_qkv, uninstall_fused_qkv


def _unet(dtype=torch.float32, seed=0):
    # alpha 8 / rank 4: scaling 2, folded into B
    unet, params = tiny_unet_with_lora(seed=seed, dtype=dtype, channels=(32, 64),
                                       targets=("to_q", "to_k", "to_v", "to_out.0"), alpha=8.0)
    for p in params:
        p.data = p.data.float()  # fp32 trainable adapters, as the engine keeps them
    install_fast_lora(unet)
    return unet, params


def _run(unet, params, autocast: bool):
    g = torch.Generator().manual_seed(3)
    dtype = next(p.dtype for p in unet.parameters() if not p.requires_grad)
    x = torch.randn(2, 4, 8, 8, generator=g).to(dtype)
    ehs = torch.randn(2, 5, 16, generator=g).to(dtype)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        out = unet(x, torch.tensor([20, 600]), ehs).sample
    out.float().pow(2).mean().backward()
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out.detach().float(), grads


def _close(got, want, tol):
    (out, grads), (ref, ref_grads) = got, want
    assert (out - ref).norm() <= tol * ref.norm()
    for g, r in zip(grads, ref_grads):
        assert (g - r).norm() <= tol * r.norm() + 1e-8


@pytest.mark.parametrize("mode", ["autocast", "pure_bf16"])
def test_fused_qkv_gives_the_same_training_signal(mode):
    unet, params = _unet(torch.bfloat16 if mode == "pure_bf16" else torch.float32)
    autocast = mode == "autocast"
    want = _run(unet, params, autocast)
    attn1 = [m for n, m in unet.named_modules() if n.endswith("attn1")]
    assert install_fused_qkv(unet) == len(attn1) > 0
    for a in attn1:  # the three frozen weights are views of the one fused tensor: no extra memory
        fused = a._fused_qkv_weight
        assert all(layer.base_layer.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
                   for layer in (a.to_q, a.to_k, a.to_v))
    got = _run(unet, params, autocast)
    _close(got, want, 5e-2)  # bf16 products summed in another order (CPU kernels: up to ~3% on a gradient)
    assert any((g - w).abs().max() > 0 for g, w in zip(got[1], want[1]))  # the fused path really ran
    assert uninstall_fused_qkv(unet) == len(attn1)
    back = _run(unet, params, autocast)
    assert torch.equal(back[0], want[0])


def test_fp32_compute_and_disabled_adapters_run_diffusers_processor():
    unet, params = _unet(torch.float32)
    want = _run(unet, params, autocast=False)
    install_fused_qkv(unet)
    got = _run(unet, params, autocast=False)  # fp32: not covered, diffusers' processor, bit-identical
    assert torch.equal(got[0], want[0])
    from diffusers.utils.peft_utils import set_adapter_layers

    set_adapter_layers(unet, enabled=False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        x, ehs = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 16)
        off = unet(x, torch.tensor([5]), ehs).sample
        uninstall_fused_qkv(unet)
        base = unet(x, torch.tensor([5]), ehs).sample
    assert torch.equal(off, base)  # adapters off: the base model, whatever the processor


def test_compile_choice_follows_the_config():
    # auto: compiled transformer blocks for SDXL only, and not under gradient checkpointing
    assert compile_choice() is None  # attempt 16: the hand-written kernels need no compile in either family
    assert compile_choice("blocks") == "blocks"
    assert compile_choice("regions") == "regions"
    assert compile_choice("off") is None
    from lora_studio.config import TrainingConfig

    # every other value the config accepts names a compile set
    choices = TrainingConfig.__dataclass_fields__["compile_unet"].metadata["choices"]
    assert set(choices) - {"auto", "off"} <= set(COMPILE_SETS)
