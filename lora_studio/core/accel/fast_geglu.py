"""The feed-forward's GEGLU in one pass forward and one backward.

Every transformer block's feed-forward starts with GEGLU: a Linear to twice the inner width, then
``a * gelu(g)`` on the two halves. Eagerly that is a GELU kernel, a multiply, and in the backward two
multiplies, GELU's backward and a ``cat`` of the halves' gradients: each reads or writes the block's widest
activation (SDXL b4: 60 blocks at 4096 tokens x 10240 channels). One Triton kernel reads the projection's
output once and writes the product; the backward reads it and the incoming gradient once and writes the
projection's gradient in place of the ``cat``. GELU is the exact (erf) form diffusers uses, in float32.
Only the projection's output is saved for the backward (eager autograd also keeps ``gelu(g)``): less time
and less peak memory per step (bench/NOTES.md).

`install_fast_geglu` gives a module's diffusers GEGLUs this path for contiguous CUDA outputs outside a
compiled region (inductor fuses those itself); anything else runs diffusers' own forward.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from lora_studio.core.accel.fast_kernels import (count_patched, install_forward, triton_available,
                                                     triton_self_check, unpatch)

BLOCK_R, BLOCK_D = 4, 256  # rows x output columns per program (SD's feed-forward widths are multiples of 256)
WARPS = 4  # (the best of the settings bench/kernel_tiles.py sweeps)
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def available(device: torch.device | str) -> bool:
    """Triton is there, and the kernels compile and agree with eager GEGLU on `device` (checked once)."""
    return triton_available(_kernels, _self_check, device)


def _check(device: str, dtype: torch.dtype, tol: float) -> bool:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 2 * 40, generator=g).to(device, dtype)
    dy = torch.randn(3, 5, 40, generator=g).to(device, dtype)
    ref_h = h.float().requires_grad_(True)
    ref = reference(ref_h)
    (ref_dh,) = torch.autograd.grad(ref, ref_h, dy.float())
    ours_h = h.clone().requires_grad_(True)
    y = geglu(ours_h)
    (dh,) = torch.autograd.grad(y, ours_h, dy)
    return torch.allclose(y.float(), ref, atol=tol, rtol=tol) and torch.allclose(dh.float(), ref_dh, atol=tol, rtol=tol)


_self_check = triton_self_check(_check)


def reference(h: torch.Tensor) -> torch.Tensor:
    """Diffusers' GEGLU after its projection."""
    a, gate = h.chunk(2, dim=-1)
    return a * F.gelu(gate)


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    # Sizes stay runtime values (no variant per feed-forward width; see fast_norm). Tiles of rows x columns:
    # a flat index would need a 64-bit division per element to find its row, which made the first version
    # run at about half the card's memory bandwidth.
    @triton.jit(do_not_specialize=["rows", "d"])
    def forward(H, OUT, rows, d, BR: tl.constexpr, BD: tl.constexpr):
        r = (tl.program_id(0) * BR + tl.arange(0, BR)).to(tl.int64)
        c = tl.program_id(1) * BD + tl.arange(0, BD)
        mask = (r < rows)[:, None] & (c < d)[None, :]
        src = r[:, None] * (2 * d) + c[None, :]  # the row's first half; its gate is d further on
        a = tl.load(H + src, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(H + src + d, mask=mask, other=0.0).to(tl.float32)
        out = a * (0.5 * g * (1.0 + tl.erf(g * 0.7071067811865476)))
        tl.store(OUT + r[:, None] * d + c[None, :], out.to(OUT.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=["rows", "d"])
    def backward(H, DY, DH, rows, d, BR: tl.constexpr, BD: tl.constexpr):
        r = (tl.program_id(0) * BR + tl.arange(0, BR)).to(tl.int64)
        c = tl.program_id(1) * BD + tl.arange(0, BD)
        mask = (r < rows)[:, None] & (c < d)[None, :]
        src = r[:, None] * (2 * d) + c[None, :]
        a = tl.load(H + src, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(H + src + d, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + r[:, None] * d + c[None, :], mask=mask, other=0.0).to(tl.float32)
        cdf = 0.5 * (1.0 + tl.erf(g * 0.7071067811865476))
        pdf = tl.exp(-0.5 * g * g) * 0.3989422804014327
        tl.store(DH + src, (dy * g * cdf).to(DH.dtype.element_ty), mask=mask)
        tl.store(DH + src + d, (dy * a * (cdf + g * pdf)).to(DH.dtype.element_ty), mask=mask)

    return triton, forward, backward


class _GEGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h):
        triton, fwd, _ = _kernels()
        d = h.shape[-1] // 2
        out = torch.empty(*h.shape[:-1], d, device=h.device, dtype=h.dtype)
        rows = out.numel() // d if d else 0
        fwd[_grid(triton, rows, d)](h, out, rows, d, BR=BLOCK_R, BD=BLOCK_D, num_warps=WARPS)
        ctx.save_for_backward(h)
        return out

    @staticmethod
    def backward(ctx, dy):
        triton, _, bwd = _kernels()
        (h,) = ctx.saved_tensors
        dy = dy.contiguous()
        dh = torch.empty_like(h)
        d = h.shape[-1] // 2
        rows = dy.numel() // d if d else 0
        bwd[_grid(triton, rows, d)](h, dy, dh, rows, d, BR=BLOCK_R, BD=BLOCK_D, num_warps=WARPS)
        return dh


def _grid(triton, rows: int, d: int) -> tuple[int, int]:
    return (triton.cdiv(rows, BLOCK_R), triton.cdiv(d, BLOCK_D))


def geglu(h: torch.Tensor) -> torch.Tensor:
    """``a * gelu(g)`` for ``a, g = h.chunk(2, -1)``; `h` contiguous with an even last dimension."""
    return _GEGLU.apply(h)


def covered(h: torch.Tensor) -> bool:
    # torch.compile traces diffusers' arithmetic instead (inductor fuses it; a Triton launch inside an
    # autograd Function is not something to make dynamo trace)
    return (h.is_cuda and h.dtype in _DTYPES and h.is_contiguous() and h.shape[-1] % 2 == 0 and h.numel() > 0
            and not torch.compiler.is_compiling())


def _forward(self, hidden_states, *args, **kwargs):
    h = self.proj(hidden_states)
    return geglu(h) if covered(h) else reference(h)


def install_fast_geglu(module) -> int:
    """Give every diffusers GEGLU in `module` the fused path (if Triton is there and its kernels pass a
    check on the module's device); returns how many."""
    from diffusers.models.activations import GEGLU

    # (exact class: a subclass may compute something else; no "approximate" GELU: diffusers' GEGLU calls the
    # exact one, and a version that adds the option is left alone)
    return install_forward(module, _forward, lambda sub: type(sub) is GEGLU
                           and getattr(sub, "approximate", "none") == "none", available)


def installed(module) -> int:
    """How many of `module`'s GEGLUs run the fused path."""
    return count_patched(module, _forward)


def uninstall_fast_geglu(module) -> int:
    return unpatch(module, _forward)
