"""GroupNorm on channels-last maps (fast_norm's Triton kernels) against ATen's GroupNorm. Runs on a CUDA GPU, or
on the CPU through Triton's interpreter where Triton is installed (torch's CPU build does not ship it: skipped)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before Triton is imported
pytest.importorskip("triton")

from lora_testkit import rel  # noqa: E402

from lora_studio.core.accel.fast_kernels import patched  # noqa: E402
from lora_studio.core.accel.fast_norm import (group_norm_nhwc, install_nhwc_group_norm,  # noqa: E402
                                                 uninstall_nhwc_group_norm)

DEVICE = "cuda" if CUDA else "cpu"


# (B, C, H, W, groups): pixels not a multiple of the 64-pixel tile, groups straddling 64-channel tiles,
# SD 1.5's 10-channel groups, and a map with more tiles than one combine step takes
@pytest.mark.parametrize("shape", [(2, 64, 9, 7, 8), (2, 320, 8, 8, 32), (1, 96, 12, 12, 32), (1, 32, 48, 48, 4)])
def test_channels_last_group_norm_matches_aten(shape):
    b, c, h, w, groups = shape
    g = torch.Generator().manual_seed(0)
    x32 = (torch.randn(b, c, h, w, generator=g) * 3 + 1.5).to(DEVICE)  # an offset mean: the variance must not cancel
    wt, bias = torch.randn(c, generator=g).to(DEVICE), torch.randn(c, generator=g).to(DEVICE)
    dy32 = torch.randn(b, c, h, w, generator=g).to(DEVICE)
    for silu in (False, True):
        _check_against_aten(x32, wt, bias, dy32, groups, silu)


def _check_against_aten(x32, wt, bias, dy32, groups, silu):
    ref_x = x32.clone().requires_grad_(True)
    ref = F.group_norm(ref_x, groups, wt, bias, 1e-6)
    ref = F.silu(ref) if silu else ref
    (ref_dx,) = torch.autograd.grad(ref, ref_x, dy32)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        x = x32.to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        dy = dy32.to(dtype).contiguous(memory_format=torch.channels_last)
        y = group_norm_nhwc(x, groups, wt.to(dtype), bias.to(dtype), 1e-6, silu=silu)
        (dx,) = torch.autograd.grad(y, x, dy)
        assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
        assert dx.is_contiguous(memory_format=torch.channels_last)
        assert rel(y, ref) <= tol and rel(dx, ref_dx) <= tol, (dtype, silu, rel(y, ref), rel(dx, ref_dx))


# a (C,) conv bias, and a (B, C) bias + time embedding
@pytest.mark.parametrize("per_sample", [False, True])
def test_a_shift_read_with_the_map_is_group_norm_of_the_shifted_map(per_sample):
    b, c, h, w, groups = 2, 96, 9, 7, 32
    g = torch.Generator().manual_seed(5)
    x32 = torch.randn(b, c, h, w, generator=g).to(DEVICE)
    shift = (torch.randn(b, c, generator=g) * 4 if per_sample else torch.randn(c, generator=g) * 4).to(DEVICE)
    wt, bias = torch.randn(c, generator=g).to(DEVICE), torch.randn(c, generator=g).to(DEVICE)
    dy32 = torch.randn(b, c, h, w, generator=g).to(DEVICE)
    ref_x = x32.clone().requires_grad_(True)
    ref = F.silu(F.group_norm(ref_x + shift.view(-1, c, 1, 1), groups, wt, bias, 1e-6))
    (ref_dx,) = torch.autograd.grad(ref, ref_x, dy32)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        x = x32.to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        y = group_norm_nhwc(x, groups, wt.to(dtype), bias.to(dtype), 1e-6, silu=True, shift=shift.to(dtype))
        (dx,) = torch.autograd.grad(y, x, dy32.to(dtype).contiguous(memory_format=torch.channels_last))
        assert rel(y, ref) <= tol and rel(dx, ref_dx) <= tol, (dtype, rel(y, ref), rel(dx, ref_dx))


def test_the_residual_kernel_adds_two_maps_and_a_channel_bias_in_one_pass():
    from lora_studio.core.accel import fast_norm

    g = torch.Generator().manual_seed(6)
    a, b = (torch.randn(2, 300, 5, 3, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
            .requires_grad_(True) for _ in range(2))
    bias = torch.randn(300, generator=g).to(DEVICE)
    out = fast_norm._Residual.apply(a, b, bias)  # (residual_add takes this path for CUDA maps only)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert rel(out, a + b + bias.view(1, -1, 1, 1)) < 1e-6
    dy = torch.randn(out.shape, generator=g).to(DEVICE)
    da, db = torch.autograd.grad(out, (a, b), dy)
    assert torch.equal(da, dy) and torch.equal(db, dy)
    # anything else: eager arithmetic, same result
    assert rel(fast_norm.residual_add(a.contiguous(), b, bias), a + b + bias.view(1, -1, 1, 1)) < 1e-6
    assert torch.equal(fast_norm.residual_add(a, b, None), a + b)


# LoRA on attention only (every resnet convolution frozen: biases folded), on the resnets' own convolutions (peft's
# layers run as they are), on the time embedding's projection (its gradient must reach it: no folding)
RESNET_TARGETS = [("to_q", "to_k", "to_v"), ("to_q", "conv1", "conv2"), ("to_q", "time_emb_proj")]


@pytest.mark.parametrize("targets", RESNET_TARGETS)
def test_the_resnet_forward_trains_like_diffusers_through_the_kernels(monkeypatch, targets):
    """The fused ResnetBlock2D forward (biases and time embedding folded into the kernels), on this test's
    device: on the CPU through Triton's interpreter, with the module paths (CUDA only) taking CPU tensors too."""
    from lora_testkit import output_and_grads, tiny_unet_with_lora

    from lora_studio.core.accel import fast_norm

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    if not CUDA:
        monkeypatch.setattr(fast_norm, "covered", lambda norm, x: (
            x.dim() == 4 and not norm.weight.requires_grad and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous()))
    unet, params = tiny_unet_with_lora(seed=2, device=DEVICE, channels=(32, 64), targets=targets)
    unet.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 8, 8, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    ehs, t = torch.randn(2, 5, 16, generator=g).to(DEVICE), torch.tensor([10, 500], device=DEVICE)
    want = output_and_grads(unet, params, x, t, ehs)
    install_nhwc_group_norm(unet)
    got = output_and_grads(unet, params, x, t, ehs)
    errors = [rel(got[0], want[0])] + [rel(a, b) for a, b in zip(got[1], want[1])]
    assert max(errors) < 1e-4, errors
    assert all(g.abs().sum() > 0 for g in got[1])  # every adapter (the time embedding's too) got a gradient


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (the module path is for CUDA tensors only)")
# attention LoRA (the resnets' convolutions frozen: their biases join the norm and the residual add), and LoRA
# on the resnets' own convolutions (peft's layers: run as they are)
@pytest.mark.parametrize("targets", RESNET_TARGETS)
def test_installed_group_norm_trains_a_channels_last_unet_like_aten(monkeypatch, targets):
    from lora_testkit import output_and_grads, tiny_unet_with_lora

    # fp32 throughout: TF32 convolutions would pick different algorithms per layout and blur the comparison
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    unet, params = tiny_unet_with_lora(seed=2, device="cuda", channels=(32, 64), targets=targets)
    unet.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 8, 8, generator=g).cuda().contiguous(memory_format=torch.channels_last)
    ehs, t = torch.randn(2, 5, 16, generator=g).cuda(), torch.tensor([10, 500], device="cuda")

    want = output_and_grads(unet, params, x, t, ehs)
    n = install_nhwc_group_norm(unet)
    assert n == sum(type(m) is torch.nn.GroupNorm for m in unet.modules()) > 0
    # every convolution's input outside the attentions stays channels-last (no NCHW copy, e.g. the shortcuts');
    # a Transformer2DModel's own proj_out input is NCHW (fast_proj's business, not installed here). Watched at
    # F.conv2d: the resnets call it directly for their frozen convolutions (biases added elsewhere).
    with _ConvLayouts(unet) as layouts:
        got = output_and_grads(unet, params, x, t, ehs)
    errors = [rel(got[0], want[0])] + [rel(a, b) for a, b in zip(got[1], want[1])]
    assert max(errors) < 1e-4, errors
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for name, m in unet.named_modules() if ".attentions." not in name)
    assert len(layouts) == n_convs and all(layouts), layouts
    assert uninstall_nhwc_group_norm(unet) == n


class _ConvLayouts(torch.overrides.TorchFunctionMode):
    """Records, per F.conv2d call outside a Transformer2DModel, whether its input is channels-last."""

    def __init__(self, unet):
        super().__init__()
        self.depth, self.layouts = 0, []
        self.hooks = []
        for m in unet.modules():
            if type(m).__name__ == "Transformer2DModel":
                self.hooks.append(m.register_forward_pre_hook(lambda *a: setattr(self, "depth", self.depth + 1)))
                self.hooks.append(m.register_forward_hook(lambda *a: setattr(self, "depth", self.depth - 1)))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.conv2d and self.depth == 0:
            self.layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        super().__enter__()
        return self.layouts

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()
        return super().__exit__(*exc)


def test_install_takes_the_plain_resnet_blocks_and_uninstall_gives_them_back():
    from lora_testkit import tiny_unet_with_lora

    from lora_studio.core.accel import fast_norm

    unet, _ = tiny_unet_with_lora(seed=3, device=DEVICE, channels=(32, 64))
    resnets = [m for m in unet.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert install_nhwc_group_norm(unet) > 0  # (without a GPU: Triton's interpreter passes the self-check on the CPU)
    assert resnets and all(patched(m, fast_norm._resnet_forward) for m in resnets)
    uninstall_nhwc_group_norm(unet)
    assert not any("forward" in m.__dict__ for m in unet.modules())
