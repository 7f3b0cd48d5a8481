"""Transformer2DModel's projections without layout copies (on in the engine's fast path): the same outputs and
training signal as diffusers' own code, for SD 1.5's 1x1 convolutions and SDXL's Linears."""

from __future__ import annotations

import copy

import pytest
import torch
from lora_testkit import rel, tiny_unet_with_lora

from lora_studio.core.accel.fast_kernels import install_fast_lora
from lora_studio.core.accel.fast_proj import install_fast_proj, uninstall_fast_proj


def _unet(dtype, linear: bool, targets=("to_q", "to_k", "to_v", "to_out.0"), device="cpu"):
    unet, params = tiny_unet_with_lora(seed=1, dtype=dtype, channels=(32, 64), targets=targets,
                                       use_linear_projection=linear, device=device)
    for p in params:
        p.data = p.data.float()  # fp32 trainable adapters, as the engine keeps them
    install_fast_lora(unet)
    return unet, params


def _run(unet, params, autocast=False, channels_last=False):
    g = torch.Generator().manual_seed(5)
    p0 = next(p for p in unet.parameters() if not p.requires_grad)
    x = torch.randn(2, 4, 8, 8, generator=g).to(p0.device, p0.dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    ehs = torch.randn(2, 5, 16, generator=g).to(p0.device, p0.dtype)
    with torch.autocast(p0.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = unet(x, torch.tensor([20, 600], device=p0.device), ehs).sample
    out.float().pow(2).mean().backward()
    grads = [p.grad.clone() for p in params] + [x.grad.float()]  # the input's gradient crosses every block
    for p in params:
        p.grad = None
    return out.detach().float(), grads


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("linear", [False, True], ids=["conv1x1_sd15", "linear_sdxl"])
def test_copy_free_projections_give_the_same_training_signal_fp32(linear, channels_last):
    unet, params = _unet(torch.float32, linear)
    if channels_last:  # the feature maps stay channels-last (fast_norm): the projections are Linears on views
        unet.to(memory_format=torch.channels_last)
    want = _run(unet, params, channels_last=channels_last)
    blocks = [m for m in unet.modules() if type(m).__name__ == "Transformer2DModel"]
    assert isinstance(blocks[0].proj_in, torch.nn.Linear if linear else torch.nn.Conv2d)
    assert install_fast_proj(unet) == len(blocks) > 0
    got = _run(unet, params, channels_last=channels_last)
    assert rel(got[0], want[0]) <= 1e-5
    for g, w in zip(got[1], want[1]):
        assert rel(g, w) <= 1e-5
    assert uninstall_fast_proj(unet) == len(blocks)
    back = _run(unet, params, channels_last=channels_last)
    assert torch.equal(back[0], want[0]) and all(torch.equal(a, b) for a, b in zip(back[1], want[1]))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
@pytest.mark.parametrize("linear", [False, True], ids=["conv1x1_sd15", "linear_sdxl"])
def test_copy_free_projections_in_bf16_are_as_close_to_fp32_as_diffusers_code(linear, device):
    """In bf16 both ways round differently (single gradients land up to ~2x either side of each other's distance
    to the fp32 result): on average over the output and all gradients, no further from fp32 than diffusers' code."""
    unet, params = _unet(torch.bfloat16, linear, device=device)  # cuda: cuBLAS's batched products
    exact = copy.deepcopy(unet).float()
    truth = _run(exact, [p for p in exact.parameters() if p.requires_grad])
    want = _run(unet, params)
    install_fast_proj(unet)
    got = _run(unet, params)
    assert not torch.equal(got[0], want[0])  # other rounding: the copy-free path ran
    ours, theirs = zip(*[(rel(g, t), rel(w, t)) for g, w, t in zip([got[0], *got[1]], [want[0], *want[1]],
                                                                       [truth[0], *truth[1]])])
    # (a wrong layout would be ~100% off; the CPU's bf16 kernels land within ~12% of diffusers' total)
    assert max(ours) < 0.1 and sum(ours) <= 1.2 * sum(theirs)


def test_the_copy_free_path_really_runs(monkeypatch):
    from lora_studio.core.accel import fast_proj

    unet, params = _unet(torch.float32, linear=False)
    install_fast_proj(unet)
    calls = []
    for name in ("_TokensIn", "_TokensOut"):
        fn = getattr(fast_proj, name)
        monkeypatch.setattr(fn, "apply", (lambda n, f: lambda *a: calls.append(n) or f(*a))(name, fn.apply))
    _run(unet, params)
    n = sum(type(m).__name__ == "Transformer2DModel" for m in unet.modules())
    assert sorted(calls) == ["_TokensIn"] * n + ["_TokensOut"] * n


def test_autocast_and_wrapped_projections_keep_diffusers_code():
    unet, params = _unet(torch.float32, linear=True)
    want = _run(unet, params, autocast=True)
    install_fast_proj(unet)
    got = _run(unet, params, autocast=True)  # autocast: not covered, bit-identical
    assert torch.equal(got[0], want[0]) and all(torch.equal(a, b) for a, b in zip(got[1], want[1]))
    # a LoRA on the projections themselves: that block keeps diffusers' code (peft's layer does the product)
    unet, _ = _unet(torch.float32, linear=True, targets=("to_q", "proj_in"))
    assert install_fast_proj(unet) == 0
