"""The fused GroupNorm + SiLU ResNet forward: diffusers' arithmetic, gradients included, and a clean uninstall."""

from __future__ import annotations

import time

import pytest
import torch

from lora_studio.core.training.fast_norms import (compiled_gn_silu, covers, gn_silu, install_fast_resnets,
                                                  uncompile_resnets, uninstall_fast_resnets)


def _unet_with_conv_lora(seed=0):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(seed)
    # Two levels with a down/up sampler each, resnet shortcuts (32 -> 48 channels), a time embedding.
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 48), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=8, norm_num_groups=8)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_v", "conv1", "conv2", "conv_shortcut"]))
    unet.train()
    return unet, [p for p in unet.parameters() if p.requires_grad]


def _fwd_bwd(unet, params):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    ehs = torch.randn(2, 5, 16, generator=g)
    out = unet(x, torch.tensor([10, 700]), ehs).sample
    out.pow(2).mean().backward()
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out.detach(), grads


def test_fused_resnet_forward_matches_diffusers_with_gradients_and_uninstalls():
    unet, params = _unet_with_conv_lora()
    want, want_grads = _fwd_bwd(unet, params)
    resnets = [m for m in unet.modules() if type(m).__name__ == "ResnetBlock2D"]
    n = install_fast_resnets(unet, compiled=False)
    assert n == len(resnets) > 0  # every resnet of this UNet is plain (samplers are separate modules here)
    got, grads = _fwd_bwd(unet, params)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)
    for g, w in zip(grads, want_grads):
        assert torch.allclose(g, w, atol=1e-6, rtol=1e-4)
    assert uninstall_fast_resnets(unet) == n
    assert all("forward" not in m.__dict__ for m in resnets)
    back, _ = _fwd_bwd(unet, params)
    assert torch.equal(back, want)


def test_covers_only_blocks_whose_forward_it_reproduces():
    from diffusers.models.resnet import ResnetBlock2D

    assert covers(ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=4, groups=4))
    assert not covers(ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=4, groups=4, down=True))
    assert not covers(ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=8, groups=4,
                                    time_embedding_norm="scale_shift"))
    assert not covers(ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=4, groups=4, dropout=0.1))
    assert not covers(torch.nn.GroupNorm(4, 8))


@pytest.mark.slow
def test_compiled_gn_silu_serves_every_size_and_falls_back_to_eager():
    """One dynamic-shape compile covers different channel counts and sizes, with the eager result."""
    fn = compiled_gn_silu()
    t0 = time.perf_counter()
    for c, hw in ((16, 8), (24, 4)):
        x = torch.randn(2, c, hw, hw, requires_grad=True)
        w, b = torch.randn(c), torch.randn(c)
        add = torch.randn(2, c, 1, 1)
        got = fn(x, w, b, 8, 1e-5, add)
        want = gn_silu(x, w, b, 8, 1e-5, add)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
        (gx,) = torch.autograd.grad(got.sum(), x)
        (wx,) = torch.autograd.grad(want.sum(), x)
        assert torch.allclose(gx, wx, atol=1e-5, rtol=1e-4)
    print(f"compile + run: {time.perf_counter() - t0:.1f} s")
    unet, _ = _unet_with_conv_lora()
    n = install_fast_resnets(unet, compiled=True)
    assert uncompile_resnets(unet) == n and uncompile_resnets(unet) == 0
    assert all(m._fast_norm_silu is gn_silu for m in unet.modules() if "_fast_norm_silu" in m.__dict__)
