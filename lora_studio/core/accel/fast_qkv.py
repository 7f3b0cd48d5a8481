"""Self-attention's q/k/v as one matrix product, their LoRA A factors as another.

In a UNet's self-attention the three projections read the same input. diffusers runs them as three
products with N = C (and, with LoRA, three more of rank r, then three adds of the adapter outputs); the
backward sums three input gradients with two more passes. Here the frozen weights are concatenated into
one (3C, C) tensor — the three Linear weights become views into it, so no memory is added — and the three
A factors into one (3r, C) product, the three B into one block-diagonal product added in place. Same
arithmetic up to rounding; faster in both families (bench/NOTES.md), so the engine's fast path turns it on
(`accel.Options.training`).

Covered: self-attention (no encoder states, no mask, 3-D input, no group/spatial/q/k norms) whose to_q /
to_k / to_v all run `fast_kernels`' LoRA forward with the same adapter and rank, on bias-free Linears of one
shape and dtype. Anything else, at install or at call time (adapters switched off, merged, fp32 compute),
runs diffusers' own processor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lora_studio.core.accel.fast_kernels import compute_dtype, fast_lora_ready, scaled_b


def _qkv(attn, x: torch.Tensor):
    """(q, k, v) of `x` through the fused products, or None where this call is not covered."""
    fused = attn.__dict__.get("_fused_qkv_weight")
    layers = (attn.to_q, attn.to_k, attn.to_v)
    dtype = None if fused is None else compute_dtype(x, fused.dtype)
    if dtype is None or not all(fast_lora_ready(layer) for layer in layers):
        return None
    a = torch.cat([layer.lora_A[layer._fast_lora_name].weight for layer in layers]).to(dtype)  # (3r, C)
    # the three B factors as one block-diagonal (3C, 3r) matrix: the adapters' outputs are added in place to
    # the (tokens, 3C) product, and q / k / v are column blocks of it. (Three batched products over a
    # (3, tokens, C) view cost a copy of that view forward and two layout copies backward plus a stack; the
    # zero blocks cost far less: rank x 3 is still a thin product.)
    b = torch.block_diag(*(scaled_b(layer) for layer in layers)).to(dtype)
    c = fused.shape[0] // 3
    x2 = x.reshape(-1, fused.shape[1])
    y = F.linear(x2, fused)  # (m, 3C)
    y.addmm_(F.linear(x2, a), b.t())
    return y.view(*x.shape[:-1], 3 * c).split(c, dim=-1)


def _processor_class():
    from diffusers.models.attention_processor import AttnProcessor2_0

    class FusedQKVProcessor(AttnProcessor2_0):
        """AttnProcessor2_0 with q/k/v from `_qkv` where it covers the call."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     *args, **kwargs):
            qkv = None
            if (encoder_hidden_states is None and attention_mask is None and not args and not kwargs
                    and hidden_states.ndim == 3 and attn.spatial_norm is None and attn.group_norm is None
                    and attn.norm_q is None and attn.norm_k is None):
                qkv = _qkv(attn, hidden_states)
            if qkv is None:
                return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                        *args, **kwargs)
            batch, heads = hidden_states.shape[0], attn.heads
            head_dim = qkv[0].shape[-1] // heads
            q, k, v = (t.view(batch, -1, heads, head_dim).transpose(1, 2) for t in qkv)
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
            out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(q.dtype)
            out = attn.to_out[1](attn.to_out[0](out))
            if attn.residual_connection:
                out = out + hidden_states
            return out if attn.rescale_output_factor == 1 else out / attn.rescale_output_factor

    return FusedQKVProcessor


def install_fused_qkv(module) -> int:
    """Fuse q/k/v of every covered self-attention in `module` (after `install_fast_lora`); returns how many."""
    processor = None
    n = 0
    for sub in module.modules():
        if type(sub).__name__ != "Attention" or sub.is_cross_attention or "_fused_qkv_weight" in sub.__dict__:
            continue
        layers = (sub.to_q, sub.to_k, sub.to_v)
        if not all("_fast_lora_name" in layer.__dict__ for layer in layers):
            continue
        bases = [layer.base_layer for layer in layers]
        if any(type(b) is not torch.nn.Linear for b in bases):  # e.g. int8-stored weights (int8_base)
            continue
        if any(b.bias is not None for b in bases) or len({(b.weight.shape, b.weight.dtype) for b in bases}) != 1:
            continue
        if len({layer.lora_A[layer._fast_lora_name].weight.shape for layer in layers}) != 1:
            continue
        fused = torch.cat([b.weight.detach() for b in bases])
        c = bases[0].weight.shape[0]
        for i, b in enumerate(bases):
            b.weight.data = fused[i * c:(i + 1) * c]  # views: the fused tensor is the only copy
        sub._fused_qkv_weight = fused
        sub._unfused_processor = sub.processor
        processor = processor or _processor_class()()
        sub.processor = processor
        n += 1
    return n


def uninstall_fused_qkv(module) -> int:
    """Give the covered attentions their own processor back (the weights stay views of the fused tensor)."""
    n = 0
    for sub in module.modules():
        if "_fused_qkv_weight" in sub.__dict__:
            sub.processor = sub.__dict__.pop("_unfused_processor")
            del sub.__dict__["_fused_qkv_weight"]
            n += 1
    return n


def installed(module) -> int:
    """How many attentions in `module` run q/k/v fused."""
    return sum("_fused_qkv_weight" in sub.__dict__ for sub in module.modules())
