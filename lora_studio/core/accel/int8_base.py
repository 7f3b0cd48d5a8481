"""8-bit storage of the frozen UNet's Linear weights (config ``int8_base``): SDXL 1024 training on a 6 GB card.

The frozen base is most of a LoRA run's GPU memory (SDXL's UNet: 4.8 GiB in 16-bit). Each frozen Linear
weight is stored as int8 rows with one scale per output row (symmetric, max-abs / 127) and dequantised to
the compute dtype inside its forward and backward; nothing extra is saved for the backward (only the int8
weight it already holds). The LoRA adapters stay in full precision and train exactly as before; only the
frozen weights they sit on are rounded (per-row relative error <= 1/254). The memory saved and the step's
cost: bench/lowmem.py, bench/NOTES.md.

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


def quantize_rows(w: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: int8 rows and one scale per row (symmetric, max-abs / 127), the scale in `dtype`."""
    w = w.float()
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(w / scale).clamp_(-127, 127).to(torch.int8), scale.to(dtype)


class Int8Linear(torch.nn.Module):
    """A frozen Linear whose weight is int8 rows with one scale each (about half the bytes of bf16)."""

    def __init__(self, linear: torch.nn.Linear, device=None):
        torch.nn.Module.__init__(self)  # not super(): `PeftInt8Linear` puts nn.Linear (and its arguments) next
        w = linear.weight.detach()
        q, scale = quantize_rows(w.to(device) if device is not None else w, w.dtype)
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)
        bias = None if linear.bias is None else linear.bias.detach().to(q.device)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    @torch.no_grad()
    def requantize_(self, weight: torch.Tensor) -> None:
        """Store `weight` (any float dtype) in place: tensors a captured CUDA graph reads stay the same ones."""
        q, scale = quantize_rows(weight, self.scale.dtype)
        self.q.copy_(q)
        self.scale.copy_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast(device_type=device_type, enabled=False):
            return _DequantLinear.apply(x.to(dtype), self.q, self.scale, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


class PeftInt8Linear(Int8Linear, torch.nn.Linear):
    """An `Int8Linear` that peft and diffusers' LoRA loader take for a Linear, so the preview can load LoRAs
    onto an 8-bit UNet (training quantises after injecting, so it needs no such thing).

    peft wraps any ``nn.Linear`` and reads the device and dtype of its ``weight``, the LoRA file check its
    shape: ``weight`` is the dequantised weight, a new tensor on each read (one layer's worth of memory, freed
    with it). Writing into it changes nothing: code that changes the weight (the preview's fusing) uses
    `requantize_`.
    """

    @property
    def weight(self) -> torch.Tensor:
        return dequantize(self.q, self.scale, self.scale.dtype)


def quantize_frozen_linears(model: torch.nn.Module, min_numel: int = MIN_NUMEL, *, cls: type = Int8Linear,
                            device=None) -> int:
    """Swap every frozen ``nn.Linear`` in `model` (peft's base layers included) for `cls`, in place.

    Trainable layers (the LoRA factors, a trained text encoder) are left alone. With `device`, each layer is
    quantised there and stays there (one 16-bit layer at a time on that device). Returns the bytes saved.
    """
    saved = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and not child.weight.requires_grad and child.weight.numel() >= min_numel:
                setattr(parent, name, cls(child, device))
                saved += child.weight.numel() * (child.weight.element_size() - 1)
    return saved


def base_dtype(layer: torch.nn.Module) -> torch.dtype:
    """A frozen base layer's dtype (the model's own), whether a plain Linear or an `Int8Linear`."""
    return layer.scale.dtype if isinstance(layer, Int8Linear) else layer.weight.dtype
