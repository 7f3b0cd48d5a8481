"""A Transformer2DModel's way in and out of its token layout without layout copies.

diffusers' Transformer2DModel takes an NCHW feature map, group-normalises it, projects it (a 1x1
convolution in SD 1.5, a Linear in SDXL), and permutes it to (batch, pixels, channels) tokens with a full
copy; on the way out it permutes back with another copy, projects, and adds the residual. cuDNN runs a
1x1 convolution on NCHW bf16 data by transposing its input and output to NHWC (passes measured in
bench/NOTES.md).

Here both projections are batched matrix products that read the NCHW map as a transposed view and write
their result straight in the layout the next layer wants: (batch, pixels, channels) going in, NCHW (plus the
residual, in the same product) going out. Their backward does the same in reverse, so no copy is made in
either direction and no activation is saved (the frozen weight is all the backward needs). Same arithmetic
up to rounding. A channels-last feature map (`fast_norm`) already is the token layout: there both
projections are plain Linears on views.

Covered: continuous-input Transformer2DModels whose proj_in / proj_out are plain frozen Linears or 1x1
convolutions (not LoRA-wrapped, not int8-stored), at call time outside autocast with the input in the
weights' dtype. Anything else runs diffusers' own code.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def _matrix(layer) -> torch.Tensor:
    """The (out, in) weight matrix of a Linear or 1x1 Conv2d (a view, no copy)."""
    w = layer.weight
    return w.view(w.shape[0], w.shape[1])


class _TokensIn(torch.autograd.Function):
    """(B, C, P) feature map -> (B, P, out) tokens = x^T W^T + b."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        wt = weight.t().expand(x.shape[0], -1, -1)
        if bias is None:
            return torch.bmm(x.transpose(1, 2), wt)
        return torch.baddbmm(bias.view(1, 1, -1), x.transpose(1, 2), wt)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        # (B, C, P) = W^T grad^T: written in the feature map's own layout.
        return torch.bmm(weight.t().expand(grad.shape[0], -1, -1), grad.transpose(1, 2)), None, None


class _TokensOut(torch.autograd.Function):
    """(B, P, C) tokens -> (B, out, P) feature map = W h^T + b + residual."""

    @staticmethod
    def forward(ctx, h, weight, bias, residual):
        ctx.save_for_backward(weight)
        base = residual if bias is None else residual + bias.view(1, -1, 1)
        return torch.baddbmm(base, weight.expand(h.shape[0], -1, -1), h.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        # (B, P, C) = grad^T W: the tokens' own layout; the residual's gradient passes through.
        return torch.bmm(grad.transpose(1, 2), weight.expand(grad.shape[0], -1, -1)), None, None, grad


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _covered(self, x: torch.Tensor) -> bool:
    w = self.proj_in.weight
    return not torch.is_autocast_enabled(x.device.type) and x.dtype == w.dtype and x.ndim == 4


def _operate_on_continuous_inputs(self, hidden_states):
    if not _covered(self, hidden_states):
        return type(self)._operate_on_continuous_inputs(self, hidden_states)
    b, c, height, width = hidden_states.shape
    x, w = self.norm(hidden_states), _matrix(self.proj_in)
    if _channels_last(x):  # the tokens are this memory already: a plain Linear on a view
        return F.linear(x.permute(0, 2, 3, 1).reshape(b, height * width, c), w, self.proj_in.bias), w.shape[0]
    return _TokensIn.apply(x.reshape(b, c, height * width), w, self.proj_in.bias), w.shape[0]


def _get_output_for_continuous_inputs(self, hidden_states, residual, batch_size, height, width, inner_dim):
    if not _covered(self, residual) or not hidden_states.is_contiguous():
        return type(self)._get_output_for_continuous_inputs(self, hidden_states, residual, batch_size, height,
                                                            width, inner_dim)
    if _channels_last(residual):  # out in the residual's channels-last layout: a view, no copy
        out = F.linear(hidden_states, _matrix(self.proj_out), self.proj_out.bias)
        return out.view(batch_size, height, width, -1).permute(0, 3, 1, 2) + residual
    res = residual.reshape(batch_size, residual.shape[1], height * width)
    out = _TokensOut.apply(hidden_states, _matrix(self.proj_out), self.proj_out.bias, res)
    return out.view(residual.shape)


def _plain_projection(layer) -> bool:
    if type(layer) is torch.nn.Linear:
        ok = True
    elif type(layer) is torch.nn.Conv2d:
        ok = (layer.kernel_size == (1, 1) and layer.stride == (1, 1) and layer.padding == (0, 0)
              and layer.dilation == (1, 1) and layer.groups == 1)
    else:  # a LoRA-wrapped or int8-stored projection keeps its own forward
        return False
    return ok and not layer.weight.requires_grad and (layer.bias is None or not layer.bias.requires_grad)


def install_fast_proj(module) -> int:
    """Give every covered Transformer2DModel in `module` the copy-free way in and out; returns how many."""
    n = 0
    for sub in module.modules():
        if type(sub).__name__ != "Transformer2DModel" or not getattr(sub, "is_input_continuous", False):
            continue
        if "_fast_proj" in sub.__dict__ or not all(_plain_projection(p) for p in (sub.proj_in, sub.proj_out)):
            continue
        sub._operate_on_continuous_inputs = types.MethodType(_operate_on_continuous_inputs, sub)
        sub._get_output_for_continuous_inputs = types.MethodType(_get_output_for_continuous_inputs, sub)
        sub._fast_proj = True
        n += 1
    return n


def uninstall_fast_proj(module) -> int:
    """Give the covered Transformer2DModels diffusers' own methods back."""
    n = 0
    for sub in module.modules():
        if sub.__dict__.pop("_fast_proj", False):
            del sub.__dict__["_operate_on_continuous_inputs"], sub.__dict__["_get_output_for_continuous_inputs"]
            n += 1
    return n


def installed(module) -> int:
    """How many Transformer2DModels in `module` take the copy-free way in and out."""
    return sum("_fast_proj" in sub.__dict__ for sub in module.modules())
