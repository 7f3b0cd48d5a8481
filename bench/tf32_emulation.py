"""TF32 convolutions on the CPU: what a GPU's fp32 convolutions compute by default (cuDNN's allow_tf32).

A GPU rounds each convolution's operands to TF32 (10 explicit mantissa bits, fp32's range) and accumulates in
fp32, forward and backward. `emulate()` makes `torch.nn.functional.conv2d` do the same on the CPU, so a CPU run
can show whether that rounding alone moves a result (the demo's GPU misses: docs/demo_quality.md). A bench tool:
it patches torch for the whole process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_conv2d = F.conv2d


def to_tf32(t: torch.Tensor) -> torch.Tensor:
    """``t`` (fp32) rounded to the nearest TF32 value: the low 13 mantissa bits cleared, rounding half away."""
    if t.dtype != torch.float32:
        return t
    i = t.contiguous().view(torch.int32)
    return ((i + 0x1000) & ~0x1FFF).view(torch.float32).view_as(t)


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        ctx.save_for_backward(x, w)
        ctx.args = (stride, padding, dilation, groups)
        ctx.has_bias = b is not None
        return _conv2d(to_tf32(x), to_tf32(w), b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.args
        gy_r = to_tf32(gy)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.nn.grad.conv2d_input(x.shape, to_tf32(w), gy_r, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(to_tf32(x), w.shape, gy_r, stride, padding, dilation, groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None


def _tf32_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str) or input.dtype != torch.float32:
        return _conv2d(input, weight, bias, stride, padding, dilation, groups)
    return _Conv.apply(input, weight, bias, stride, padding, dilation, groups)


def emulate() -> None:
    """From here on, every fp32 ``F.conv2d`` in this process rounds its operands as a TF32 GPU does."""
    F.conv2d = _tf32_conv2d
    torch.nn.modules.conv.F.conv2d = _tf32_conv2d
