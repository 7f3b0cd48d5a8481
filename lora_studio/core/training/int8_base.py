"""8-bit storage of the frozen UNet's Linear weights (config ``int8_base``): SDXL 1024 training on a 6 GB card.

The frozen base is most of a LoRA run's GPU memory (SDXL's UNet: 4.8 GiB in 16-bit). Each frozen Linear
weight is stored as int8 rows with one scale per output row (symmetric, max-abs / 127) and dequantised to
the compute dtype inside its forward and backward; nothing extra is saved for the backward (only the int8
weight it already holds). The LoRA adapters stay in full precision and train exactly as before; only the
frozen weights they sit on are rounded (per-row relative error <= 1/254). Measured (bench/lowmem.py, H100):
SDXL 1024 rank 32 batch 1 with checkpointing 6.21 -> 4.03 GiB, the step 1.30x slower.

``quantize_frozen_linears(unet)`` runs after the LoRA is injected (peft's base layers are swapped too) and
before the UNet moves to the GPU, so the 16-bit copy never lands there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Small projections (time embeddings, norms' affine maps are not Linear) save too little to be worth rounding.
MIN_NUMEL = 4096


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return q.to(dtype) * scale.to(dtype)


class _DequantLinear(torch.autograd.Function):
    """y = x W^T + b with W = q * scale made on the fly, in the forward and again in the backward."""

    @staticmethod
    def forward(ctx, x, q, scale, bias):
        ctx.save_for_backward(q, scale)
        return F.linear(x, dequantize(q, scale, x.dtype), bias)

    @staticmethod
    def backward(ctx, grad):
        q, scale = ctx.saved_tensors
        return grad @ dequantize(q, scale, grad.dtype), None, None, None


class Int8Linear(torch.nn.Module):
    """A frozen Linear whose weight is int8 rows with one scale each (about half the bytes of bf16)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        scale = w.float().abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        self.register_buffer("q", torch.round(w.float() / scale).clamp_(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(w.dtype))
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast(device_type=device_type, enabled=False):
            return _DequantLinear.apply(x.to(dtype), self.q, self.scale, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


def quantize_frozen_linears(model: torch.nn.Module, min_numel: int = MIN_NUMEL) -> int:
    """Swap every frozen ``nn.Linear`` in `model` (peft's base layers included) for `Int8Linear`, in place.

    Trainable layers (the LoRA factors, a trained text encoder) are left alone. Returns the bytes saved.
    """
    saved = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and not child.weight.requires_grad and child.weight.numel() >= min_numel:
                setattr(parent, name, Int8Linear(child))
                saved += child.weight.numel() * (child.weight.element_size() - 1)
    return saved


def base_dtype(layer: torch.nn.Module) -> torch.dtype:
    """A frozen base layer's dtype (the model's own), whether a plain Linear or an `Int8Linear`."""
    return layer.scale.dtype if isinstance(layer, Int8Linear) else layer.weight.dtype
