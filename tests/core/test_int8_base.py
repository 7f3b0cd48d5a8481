"""8-bit storage of the frozen UNet weights (config int8_base): the same layer up to rounding, LoRA trains on it."""

from __future__ import annotations

import copy

import pytest
import torch
from lora_testkit import tiny_unet_with_lora

from lora_studio.core.accel.fast_kernels import install_fast_lora
from lora_studio.core.accel.fast_qkv import install_fused_qkv
from lora_studio.core.accel.int8_base import Int8Linear, dequantize, quantize_frozen_linears


def test_int8_linear_is_the_linear_up_to_rounding_and_passes_gradients():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 96).requires_grad_(False)
    q8 = Int8Linear(lin)
    assert q8.q.dtype == torch.int8 and q8.q.shape == (96, 64) and q8.scale.shape == (96, 1)
    # per row, every weight is within half a step (max |w| / 254) of the original
    err = (dequantize(q8.q, q8.scale, torch.float32) - lin.weight).abs()
    assert (err <= lin.weight.abs().amax(dim=1, keepdim=True) / 254 + 1e-7).all() and err.max() > 0
    x = torch.randn(5, 64, requires_grad=True)
    want = lin(x)
    want.square().sum().backward()
    gx_want, x.grad = x.grad.clone(), None
    got = q8(x)
    got.square().sum().backward()
    assert (got - want).norm() < 1e-2 * want.norm()
    assert (x.grad - gx_want).norm() < 2e-2 * gx_want.norm()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast it computes in autocast's dtype
        assert q8(x).dtype == torch.bfloat16


def test_quantize_swaps_only_large_frozen_linears():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64), torch.nn.Linear(8, 8))
    model[0].requires_grad_(False)
    model[2].requires_grad_(False)
    saved = quantize_frozen_linears(model)
    assert isinstance(model[0], Int8Linear)
    assert type(model[1]) is torch.nn.Linear  # trainable: left alone
    assert type(model[2]) is torch.nn.Linear  # 64 weights: too small to be worth it
    assert saved == 64 * 64 * 3  # fp32 -> int8: 3 bytes per weight


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_on_the_int8_base_gets_the_training_signal_of_the_full_base(dtype):
    unet, params = tiny_unet_with_lora(dtype=dtype, channels=(32, 64), targets=("to_q", "to_k", "to_v", "to_out.0"))
    for p in params:
        p.data = p.data.float()
    full = copy.deepcopy(unet)
    full_params = [p for p in full.parameters() if p.requires_grad]
    saved = quantize_frozen_linears(unet, min_numel=1)  # this UNet's layers are all small
    assert saved > 0
    lora_bases = [m.base_layer for m in unet.modules() if hasattr(m, "lora_A")]
    assert lora_bases and all(isinstance(b, Int8Linear) for b in lora_bases)  # peft's base layers are swapped
    if dtype == torch.bfloat16:  # the engine's pure bf16 step: the fast LoRA forward runs on the int8 base
        assert install_fast_lora(unet) == len(lora_bases)
        install_fast_lora(full)
        assert install_fused_qkv(unet) == 0  # q/k/v fusion needs plain Linear weights: it steps aside
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g).to(dtype)
    ehs = torch.randn(2, 5, 16, generator=g).to(dtype)
    results = []
    for model, ps in ((full, full_params), (unet, params)):
        out = model(x, torch.tensor([20, 600]), ehs).sample
        out.float().pow(2).mean().backward()
        results.append((out.detach().float(), [p.grad.clone() for p in ps]))
    (ref, ref_grads), (got, grads) = results
    assert (got - ref).norm() <= 3e-2 * ref.norm()
    cos = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in grads]),
                                                torch.cat([g.flatten() for g in ref_grads]), dim=0)
    assert cos > 0.99, float(cos)
    assert all(g.dtype == torch.float32 for g in grads)  # the adapters' gradients stay fp32
