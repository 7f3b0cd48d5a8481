"""GroupNorm + SiLU (+ the time-embedding add) of the UNet's ResNet blocks as one compiled function.

Eager, a ResnetBlock2D runs ``silu(group_norm(h + temb))`` as four to five separate passes over the
activation each way (statistics, normalise, SiLU, the broadcast add; their backwards), plus a division by
``output_scale_factor`` even when it is 1. One small function compiled with dynamic shapes fuses each of
those into a single kernel forward and backward, and serves every block of every size: a few graphs for the
whole UNet (with/without the add, input with/without grad), seconds of compile instead of the minutes that
compiling whole ResnetBlock2Ds takes (bench/NOTES.md attempt 10). The convolutions stay cuDNN's.

``install_fast_resnets(unet, compiled=True)`` routes every plain ResnetBlock2D through ``_fast_resnet_forward``
(same arithmetic as diffusers' forward, up to rounding); blocks it does not cover keep diffusers' forward.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def gn_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
            add: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(group_norm(x + add))``."""
    if add is not None:
        x = x + add
    return F.silu(F.group_norm(x, groups, weight, bias, eps))


_compiled: dict[str, object] = {}


def compiled_gn_silu():
    """``gn_silu`` under torch.compile with dynamic shapes: one graph for every channel count and size."""
    if "fn" not in _compiled:
        _compiled["fn"] = torch.compile(gn_silu, dynamic=True)
    return _compiled["fn"]


def covers(block) -> bool:
    """Whether `block` is a ResnetBlock2D whose forward `_fast_resnet_forward` reproduces exactly."""
    if type(block).__name__ != "ResnetBlock2D":
        return False
    dropout = getattr(block, "dropout", None)
    return (block.upsample is None and block.downsample is None and block.time_embedding_norm == "default"
            and isinstance(block.norm1, torch.nn.GroupNorm) and isinstance(block.norm2, torch.nn.GroupNorm)
            and block.norm1.affine and block.norm2.affine and isinstance(block.nonlinearity, torch.nn.SiLU)
            and isinstance(dropout, torch.nn.Dropout) and dropout.p == 0.0)


def _fast_resnet_forward(self, input_tensor, temb, *args, **kwargs):
    if args or kwargs:  # diffusers' deprecated `scale` argument: its own forward says so
        return type(self).forward(self, input_tensor, temb, *args, **kwargs)
    norm_silu = self._fast_norm_silu
    n1, n2 = self.norm1, self.norm2
    hidden = norm_silu(input_tensor, n1.weight, n1.bias, n1.num_groups, n1.eps)
    hidden = self.conv1(hidden)
    if self.time_emb_proj is not None:
        temb = self.time_emb_proj(temb if self.skip_time_act else self.nonlinearity(temb))[:, :, None, None]
    hidden = norm_silu(hidden, n2.weight, n2.bias, n2.num_groups, n2.eps, temb)
    hidden = self.conv2(hidden)  # dropout p = 0 (covers() checked): nothing to run
    if self.conv_shortcut is not None:
        # As diffusers: contiguous while training, so data-parallel gradients keep one stride.
        input_tensor = self.conv_shortcut(input_tensor.contiguous() if self.training else input_tensor)
    out = input_tensor + hidden
    return out if self.output_scale_factor == 1 else out / self.output_scale_factor


def install_fast_resnets(module, compiled: bool = True) -> int:
    """Route every ResnetBlock2D that `covers` accepts through the fused forward; returns how many."""
    fn = compiled_gn_silu() if compiled else gn_silu
    n = 0
    for sub in module.modules():
        if covers(sub):
            sub._fast_norm_silu = fn
            sub.forward = types.MethodType(_fast_resnet_forward, sub)
            n += 1
    return n


def uncompile_resnets(module) -> int:
    """Keep the fused forward but run ``gn_silu`` eagerly (after a failed compile); returns how many."""
    n = 0
    for sub in module.modules():
        if sub.__dict__.get("_fast_norm_silu") not in (None, gn_silu):
            sub._fast_norm_silu = gn_silu
            n += 1
    return n


def uninstall_fast_resnets(module) -> int:
    n = 0
    for sub in module.modules():
        if "_fast_norm_silu" in sub.__dict__:
            sub.__dict__.pop("forward", None)
            del sub.__dict__["_fast_norm_silu"]
            n += 1
    return n
