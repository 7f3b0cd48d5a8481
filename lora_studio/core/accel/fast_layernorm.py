"""The transformer blocks' LayerNorms in one pass forward and one backward.

Each diffusers BasicTransformerBlock normalises its tokens three times (norm1/norm2/norm3: ``nn.LayerNorm``
over the channels, affine, eps 1e-5), and LoRA training never trains their weight and bias. ATen's bf16
LayerNorm runs far below the card's memory bandwidth (bench/NOTES.md), and its backward also reduces the weight's and bias's gradients that nobody wants.
Here one Triton program normalises a tile of whole rows held in registers: float32 mean and a two-pass
variance over the loaded row, the output in the input's dtype, and each row's mean and 1/std kept (float32)
for the backward. The backward reads the input and the incoming gradient once and writes the input's
gradient, x_hat recomputed from the saved statistics; no gradient for the frozen weight and bias.

`add_layer_norm` also fuses the residual add before a norm (``s = x + residual``, rounded to the dtype as
eager rounds it, then normalised): one read of each input, one write of each output, and a backward that
adds the sum's incoming gradient to the norm's.

`install_fast_layernorm` gives a module's nn.LayerNorms this path for contiguous CUDA inputs of 1-D
normalized_shape whose affine parameters are frozen, outside a compiled region (inductor fuses those itself);
anything else runs F.layer_norm. Needs Triton (shipped with torch's CUDA builds on Linux).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from lora_studio.core.accel.fast_kernels import (count_patched, install_forward, triton_available,
                                                     triton_self_check, unpatch)

# A program holds whole rows in registers: BLOCK_M = TILE // BLOCK_C rows (at least one) of BLOCK_C =
# next_pow2(C) columns, masked; WARPS warps up to BLOCK_C = WIDE, WIDE_WARPS beyond it (one row a program).
# 16 elements a thread keeps the backward's register use low enough for most of the card's warps to stay
# resident; TILE / WARPS are the best of the settings bench/kernel_tiles.py sweeps (figures in bench/NOTES.md).
TILE = 2048
WARPS = 4
WIDE_WARPS, WIDE = 16, 4096
MAX_C = 8192  # a row lives in registers: wider ones run F.layer_norm
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def available(device: torch.device | str) -> bool:
    """Triton is there, and the kernels compile and agree with eager LayerNorm on `device` (checked once)."""
    return triton_available(_kernels, _self_check, device)


def _check(device: str, dtype: torch.dtype, tol: float) -> bool:
    # SD's narrowest width, so the check compiles a variant the run then uses
    g = torch.Generator().manual_seed(0)
    x, r, dy, ds = (torch.randn(3, 5, 320, generator=g).to(device, dtype) for _ in range(4))
    w, b = (torch.randn(320, generator=g).to(device, dtype) for _ in range(2))
    ok = True
    for fused in (False, True):
        xr, rr = x.float().requires_grad_(True), r.float().requires_grad_(True)
        xo, ro = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
        if fused:
            s_ref = xr + rr
            ref = F.layer_norm(s_ref, (320,), w.float(), b.float(), 1e-5)
            ref_dx, _ = torch.autograd.grad((s_ref, ref), (xr, rr), (ds.float(), dy.float()))
            s, y = add_layer_norm(xo, ro, w, b, 1e-5)
            dx, dr = torch.autograd.grad((s, y), (xo, ro), (ds, dy))
            ok = ok and _close(s, s_ref, tol) and _close(dr, ref_dx, tol)
        else:
            ref = F.layer_norm(xr, (320,), w.float(), b.float(), 1e-5)
            (ref_dx,) = torch.autograd.grad(ref, xr, dy.float())
            y = layer_norm(xo, w, b, 1e-5)
            (dx,) = torch.autograd.grad(y, xo, dy)
        ok = ok and _close(y, ref, tol) and _close(dx, ref_dx, tol)
    return ok


_self_check = triton_self_check(_check)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return bool(torch.allclose(a.float(), b, atol=tol, rtol=tol))


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    # The row count and the RES / BIAS / DS switches stay runtime values: one compiled kernel per dtype and
    # tile serves every batch and token count, fused or not (see fast_norm). The width C is left to Triton's
    # default specialisation (divisible by 16 or not): only with it can the compiler prove each row 16-byte
    # aligned and the column mask constant over 8 elements, and load 8 bf16 per instruction (with C a plain
    # runtime value every load was a single 2-byte one in the sm_90 PTX). It adds no variant for SD's widths
    # (multiples of 16), whose tile width BLOCK_C is a constant anyway.
    @triton.jit(do_not_specialize=["rows", "RES", "BIAS"])
    def forward(X, R, S, Y, W, B_, MEAN, RSTD, rows, c, eps, RES, BIAS, BM: tl.constexpr, BC: tl.constexpr):
        # RES: the row is x + r, rounded to the dtype (written to S) before it is normalised, as eager's
        # layer_norm(x + r) sees it
        r = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
        cols = tl.arange(0, BC)
        rmask = r < rows
        cmask = cols < c
        mask = rmask[:, None] & cmask[None, :]
        offs = r[:, None] * c + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        if RES:
            s = (x + tl.load(R + offs, mask=mask, other=0.0).to(tl.float32)).to(S.dtype.element_ty)
            tl.store(S + offs, s, mask=mask)
            x = s.to(tl.float32)
        n = c * 1.0  # (c may arrive as the constant 1)
        mean = tl.sum(x, axis=1) / n
        d = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / n + eps)
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
        y = d * rstd[:, None] * w[None, :]
        if BIAS:
            y += tl.load(B_ + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
        tl.store(MEAN + r, mean, mask=rmask)
        tl.store(RSTD + r, rstd, mask=rmask)

    @triton.jit(do_not_specialize=["rows", "DS"])
    def backward(X, DY, GS, DX, W, MEAN, RSTD, rows, c, DS, BM: tl.constexpr, BC: tl.constexpr):
        # dx = rstd * (w dy - mean(w dy) - x_hat mean(w dy x_hat)), plus the sum's own gradient GS (DS)
        r = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
        cols = tl.arange(0, BC)
        rmask = r < rows
        cmask = cols < c
        mask = rmask[:, None] & cmask[None, :]
        offs = r[:, None] * c + cols[None, :]
        mean = tl.load(MEAN + r, mask=rmask, other=0.0)
        rstd = tl.load(RSTD + r, mask=rmask, other=0.0)
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
        wdy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32) * w[None, :]
        n = c * 1.0  # (c may arrive as the constant 1)
        c1 = tl.sum(wdy, axis=1) / n
        c2 = tl.sum(wdy * xhat, axis=1) / n
        dx = rstd[:, None] * (wdy - c1[:, None] - xhat * c2[:, None])
        if DS:
            dx += tl.load(GS + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)

    return triton, forward, backward


def _config(c: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_C, num_warps) for rows of `c` elements."""
    bc = 1 << max(0, (c - 1).bit_length())  # next power of two
    return max(1, TILE // bc), bc, (WARPS if bc <= WIDE else WIDE_WARPS)


def _launch_forward(x, residual, weight, bias, eps):
    triton, fwd, _ = _kernels()
    c = x.shape[-1]
    rows = x.numel() // c
    bm, bc, warps = _config(c)
    y = torch.empty_like(x)
    s = torch.empty_like(x) if residual is not None else None
    mean = torch.empty(rows, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    fwd[(triton.cdiv(rows, bm),)](x, x if s is None else residual, x if s is None else s, y, weight,
                                  weight if bias is None else bias, mean, rstd, rows, c, eps,
                                  int(s is not None), int(bias is not None), BM=bm, BC=bc, num_warps=warps)
    return s, y, mean, rstd


def _launch_backward(x, dy, gs, weight, mean, rstd):
    triton, _, bwd = _kernels()
    c = x.shape[-1]
    rows = x.numel() // c
    bm, bc, warps = _config(c)
    dy = dy.contiguous()  # (the next layer may hand back a strided gradient)
    gs = gs.contiguous() if gs is not None else None
    dx = torch.empty_like(x)
    bwd[(triton.cdiv(rows, bm),)](x, dy, dy if gs is None else gs, dx, weight, mean, rstd, rows, c,
                                  int(gs is not None), BM=bm, BC=bc, num_warps=warps)
    return dx


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        _, y, mean, rstd = _launch_forward(x, None, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        return _launch_backward(x, dy, None, weight, mean, rstd), None, None, None


class _AddLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps):
        ctx.set_materialize_grads(False)  # an output nobody used gets None, not a tensor of zeros to add
        s, y, mean, rstd = _launch_forward(x, residual, weight, bias, eps)
        ctx.save_for_backward(s, weight, mean, rstd)
        return s, y

    @staticmethod
    def backward(ctx, gs, dy):
        s, weight, mean, rstd = ctx.saved_tensors
        if dy is not None:
            dx = _launch_backward(s, dy, gs, weight, mean, rstd)
        else:
            dx = gs  # (both None: autograd does not call this)
        return dx, dx, None, None, None  # the same gradient reaches x and the residual


def _frozen(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("fast_layernorm computes no gradient for the LayerNorm's weight and bias: freeze them "
                         "(requires_grad_(False)) or use F.layer_norm")


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``F.layer_norm(x, x.shape[-1:], weight, bias, eps)`` for a CUDA `x` (width up to MAX_C) with a frozen
    `weight` / `bias` of its dtype; the gradient reaches `x` only."""
    _frozen(weight, bias)
    return _LayerNorm.apply(x.contiguous(), weight, bias, eps)


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual`` and ``F.layer_norm(s, ...)`` in one pass: returns ``(s, norm)``. `residual` has
    `x`'s shape and dtype; both get ``grad(s) + the norm's input gradient``."""
    _frozen(weight, bias)
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(f"add_layer_norm needs a residual of the input's shape and dtype: got {tuple(x.shape)} "
                         f"{x.dtype} and {tuple(residual.shape)} {residual.dtype}")
    return _AddLayerNorm.apply(x.contiguous(), residual.contiguous(), weight, bias, eps)


def covered(norm, x: torch.Tensor) -> bool:
    # (torch.compile traces F.layer_norm instead: inductor fuses it, and dynamo is not made to trace a
    # Triton launch inside an autograd Function)
    w, b = norm.weight, norm.bias
    return (x.is_cuda and x.dtype in _DTYPES and x.is_contiguous() and x.dim() > 0 and x.numel() > 0
            and len(norm.normalized_shape) == 1 and x.shape[-1] == norm.normalized_shape[0] <= MAX_C
            and w is not None and not w.requires_grad and w.dtype == x.dtype
            and (b is None or (not b.requires_grad and b.dtype == x.dtype))
            and not torch.compiler.is_compiling())


def _forward(self, input):
    if covered(self, input):
        return layer_norm(input, self.weight, self.bias, self.eps)
    return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


def install_fast_layernorm(module) -> int:
    """Give every nn.LayerNorm in `module` the Triton path (if Triton is there and its kernels pass a check
    on the module's device); returns how many. Whether a call is covered is decided per call: a norm whose
    weight is trained keeps F.layer_norm."""
    # (exact class: a subclass may compute something else)
    return install_forward(module, _forward, lambda sub: type(sub) is torch.nn.LayerNorm, available)


def installed(module) -> int:
    """How many of `module`'s LayerNorms run the Triton path."""
    return count_patched(module, _forward)


def uninstall_fast_layernorm(module) -> int:
    return unpatch(module, _forward)
