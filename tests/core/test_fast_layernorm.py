"""LayerNorm and residual add + LayerNorm (fast_layernorm's Triton kernels) against eager. Runs on a CUDA GPU, or on
the CPU through Triton's interpreter where Triton is installed (torch's CPU build does not ship it: skipped)."""

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

from lora_studio.core.accel.fast_layernorm import add_layer_norm, layer_norm  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
DTYPES = ((torch.float32, 1e-5), (torch.bfloat16, 8e-3), (torch.float16, 1e-3))
# SD's narrowest width, one that is not a power of two, a wide one; row counts that are not a multiple of the
# tile's rows (8 rows of 320, 2 of 1280), fewer rows than a tile, one row
SHAPES = [(2, 9, 320), (2, 7, 37), (3, 11, 1280), (5, 320), (1, 320)]


def _inputs(shape, seed, n):
    g = torch.Generator().manual_seed(seed)
    c = shape[-1]
    # an offset mean: a variance taken as E[x^2] - E[x]^2 would lose digits
    ts = [(torch.randn(shape, generator=g) * 3 + 1.5).to(DEVICE) for _ in range(n)]
    return ts, torch.randn(c, generator=g).to(DEVICE), torch.randn(c, generator=g).to(DEVICE)


@pytest.mark.parametrize("shape", SHAPES)
def test_layer_norm_matches_eager(shape):
    (x32, dy32), w32, b32 = _inputs(shape, 0, 2)
    for dtype, tol in DTYPES:
        for bias in (b32, None):
            # the reference in float32 on the same rounded inputs: what is left is the results' one rounding
            w, b = w32.to(dtype), (bias.to(dtype) if bias is not None else None)
            ref_x = x32.to(dtype).float().requires_grad_(True)
            ref = F.layer_norm(ref_x, shape[-1:], w.float(), b.float() if b is not None else None, 1e-5)
            (ref_dx,) = torch.autograd.grad(ref, ref_x, dy32.to(dtype).float())
            x = x32.to(dtype).requires_grad_(True)
            y = layer_norm(x, w, b, 1e-5)
            (dx,) = torch.autograd.grad(y, x, dy32.to(dtype))
            assert y.dtype == dx.dtype == dtype and y.shape == dx.shape == x.shape
            assert rel(y, ref) <= tol and rel(dx, ref_dx) <= tol, (dtype, bias is None, rel(y, ref), rel(dx, ref_dx))


@pytest.mark.parametrize("shape", SHAPES)
def test_add_layer_norm_matches_eager(shape):
    (x32, r32, gs32, dy32), w32, b32 = _inputs(shape, 1, 4)
    for dtype, tol in DTYPES:
        w, b = w32.to(dtype), b32.to(dtype)
        s_eager = x32.to(dtype) + r32.to(dtype)  # rounded to the dtype, as the fused sum must be
        ref_s = s_eager.float().requires_grad_(True)
        ref = F.layer_norm(ref_s, shape[-1:], w.float(), b.float(), 1e-5)
        (ref_ds,) = torch.autograd.grad(ref, ref_s, dy32.to(dtype).float())
        ref_ds = ref_ds + gs32.to(dtype).float()
        x, r = x32.to(dtype).requires_grad_(True), r32.to(dtype).requires_grad_(True)
        s, y = add_layer_norm(x, r, w, b, 1e-5)
        dx, dr = torch.autograd.grad((s, y), (x, r), (gs32.to(dtype), dy32.to(dtype)))
        assert s.dtype == y.dtype == dx.dtype == dr.dtype == dtype
        if CUDA or dtype != torch.bfloat16:
            assert torch.equal(s, s_eager)
        else:  # Triton's interpreter rounds float32 to bfloat16 toward zero (the GPU to nearest even)
            assert ((s.float() - s_eager.float()).abs() <= s_eager.float().abs() * 2 ** -7).all()
        assert torch.equal(dx, dr)
        assert rel(y, ref) <= tol and rel(dx, ref_ds) <= tol, (dtype, rel(y, ref), rel(dx, ref_ds))


def test_add_layer_norm_with_one_output_used():
    (x32, r32, gs32, dy32), w, b = _inputs((3, 6, 48), 2, 4)
    x, r = x32.clone().requires_grad_(True), r32.clone().requires_grad_(True)
    # only the sum gets a gradient (the norm's output went nowhere): it passes through as it is
    s, y = add_layer_norm(x, r, w, b, 1e-5)
    dx, dr = torch.autograd.grad(s, (x, r), gs32)
    assert torch.equal(dx, gs32) and torch.equal(dr, gs32)
    # only the norm's output: the plain LayerNorm backward
    s, y = add_layer_norm(x, r, w, b, 1e-5)
    dx, dr = torch.autograd.grad(y, (x, r), dy32)
    ref_s = (x32 + r32).requires_grad_(True)
    (want,) = torch.autograd.grad(F.layer_norm(ref_s, (48,), w, b, 1e-5), ref_s, dy32)
    assert rel(dx, want) < 1e-5 and torch.equal(dx, dr)


def test_a_strided_incoming_gradient_is_read_right():
    # the next layer may hand back a non-contiguous gradient (e.g. a transposed view)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 40, generator=g).to(DEVICE).requires_grad_(True)
    r = torch.randn(2, 6, 40, generator=g).to(DEVICE).requires_grad_(True)
    w, b = torch.randn(40, generator=g).to(DEVICE), torch.randn(40, generator=g).to(DEVICE)
    dy = torch.randn(2, 40, 6, generator=g).to(DEVICE).transpose(1, 2)
    gs = torch.randn(40, 2, 6, generator=g).to(DEVICE).permute(1, 2, 0)
    (want,) = torch.autograd.grad(F.layer_norm(x, (40,), w, b, 1e-5), x, dy)
    (got,) = torch.autograd.grad(layer_norm(x, w, b, 1e-5), x, dy)
    assert rel(got, want) < 1e-5
    s = x + r
    want = torch.autograd.grad((s, F.layer_norm(s, (40,), w, b, 1e-5)), (x,), (gs, dy))[0]
    got = torch.autograd.grad(add_layer_norm(x, r, w, b, 1e-5), (x,), (gs, dy))[0]
    assert rel(got, want) < 1e-5


def test_trainable_affine_parameters_are_refused():
    x = torch.randn(2, 8, device=DEVICE)
    w = torch.ones(8, device=DEVICE, requires_grad=True)
    with pytest.raises(ValueError, match="freeze"):
        layer_norm(x, w, None, 1e-5)
    with pytest.raises(ValueError, match="shape"):
        add_layer_norm(x, x[:1], w.detach(), None, 1e-5)


class _OwnNorm(torch.nn.LayerNorm):  # a subclass may compute something else: left alone
    pass


def test_install_covers_frozen_layer_norms_and_a_trained_one_falls_back():
    from lora_studio.core.accel.fast_layernorm import (covered, install_fast_layernorm, installed,
                                                          uninstall_fast_layernorm)

    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.LayerNorm(24), torch.nn.Linear(24, 24), torch.nn.LayerNorm(24),
                              _OwnNorm(24), torch.nn.LayerNorm(24, bias=False), torch.nn.LayerNorm(24)).to(DEVICE)
    with torch.no_grad():  # (at their initial 1 / 0 the stacked norms would make the loss flat in the Linear)
        for norm in (net[i] for i in (0, 2, 3, 4, 5)):
            norm.weight.normal_()
            if norm.bias is not None:
                norm.bias.normal_()
    net.requires_grad_(False)
    net[1].requires_grad_(True)
    net[5].requires_grad_(True)  # the last norm trains: not covered, F.layer_norm with its gradients
    x = torch.randn(3, 5, 24, device=DEVICE)

    def run():
        out = net(x)
        grads = torch.autograd.grad(out.square().mean(), [net[1].weight, net[5].weight, net[5].bias])
        return out, grads

    want = run()
    n = install_fast_layernorm(net)  # (Triton's interpreter passes the self-check on the CPU)
    assert n == 4 and installed(net) == 4
    assert install_fast_layernorm(net) == 0  # never twice
    assert [covered(net[i], x) for i in (0, 2, 4, 5)] == [CUDA, CUDA, CUDA, False]
    got = run()
    errors = [rel(got[0], want[0])] + [rel(a, b) for a, b in zip(got[1], want[1])]
    assert max(errors) < 1e-5, errors
    assert uninstall_fast_layernorm(net) == 4 and installed(net) == 0
    assert "forward" not in net[0].__dict__


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (the module path is for CUDA tensors only)")
def test_sd15_shape_matches_aten_in_bf16():
    g = torch.Generator().manual_seed(6)
    shape = (8, 4096, 320)
    x, r, dy, gs = (torch.randn(shape, generator=g).cuda().bfloat16() for _ in range(4))
    w, b = (torch.randn(320, generator=g).cuda().bfloat16() for _ in range(2))
    ref_x = x.float().requires_grad_(True)
    ref = F.layer_norm(ref_x, (320,), w.float(), b.float(), 1e-5)
    (ref_dx,) = torch.autograd.grad(ref, ref_x, dy.float())
    aten_x = x.clone().requires_grad_(True)
    aten = F.layer_norm(aten_x, (320,), w, b, 1e-5)
    (aten_dx,) = torch.autograd.grad(aten, aten_x, dy)
    ours_x = x.clone().requires_grad_(True)
    y = layer_norm(ours_x, w, b, 1e-5)
    (dx,) = torch.autograd.grad(y, ours_x, dy)
    # no further from the float32 result than ATen's bf16 LayerNorm is (each: one rounding)
    assert rel(y, ref) <= max(8e-3, 1.5 * rel(aten, ref)) and rel(y, aten) < 8e-3
    assert rel(dx, ref_dx) <= max(8e-3, 1.5 * rel(aten_dx, ref_dx)) and rel(dx, aten_dx) < 8e-3

    xa, ra = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
    sa = xa + ra
    want = torch.autograd.grad((sa, F.layer_norm(sa, (320,), w, b, 1e-5)), (xa,), (gs, dy))[0]
    xo, ro = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
    s, y2 = add_layer_norm(xo, ro, w, b, 1e-5)
    got = torch.autograd.grad((s, y2), (xo,), (gs, dy))[0]
    assert torch.equal(s, sa) and rel(y2, F.layer_norm(sa, (320,), w, b, 1e-5)) < 8e-3 and rel(got, want) < 8e-3
