"""A transformer block's residual adds inside its LayerNorms.

diffusers' BasicTransformerBlock (SD 1.5 and SDXL: LayerNorm, self-attention, LayerNorm, cross-attention,
LayerNorm, feed-forward) adds each sub-layer's output to the residual stream and then normalises the sum:
one pass writes the sum, the next reads it again; in the backward, the sum's gradient from the norm and the
one from the next residual are added by a third pass. `fast_layernorm.add_layer_norm` does both in one
kernel each way. Same arithmetic (the sum is rounded to the activation dtype, then normalised).

Covered: blocks with ``norm_type == "layer_norm"``, plain frozen ``nn.LayerNorm``s, no positional embedding,
no feed-forward chunking, not cross-attention-only, called with hidden states (3-D) and at most an attention
mask and encoder states; at call time the LayerNorm kernels must cover the input (CUDA, contiguous, the
weights' dtype, outside torch.compile). Anything else runs diffusers' own forward.
"""

from __future__ import annotations

import torch

from lora_studio.core.accel import fast_layernorm as fln
from lora_studio.core.accel.fast_kernels import count_patched, install_forward, unpatch


def _add_norm(a: torch.Tensor, h: torch.Tensor, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """(a + h, norm(a + h)), fused where the kernels cover it."""
    if a.shape == h.shape and a.dtype == h.dtype and a.is_contiguous() and fln.covered(norm, h):
        return fln.add_layer_norm(a, h, norm.weight, norm.bias, norm.eps)
    s = a + h
    return s, norm(s)


def _forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
             timestep=None, cross_attention_kwargs=None, class_labels=None, added_cond_kwargs=None):
    if (cross_attention_kwargs or timestep is not None or class_labels is not None or added_cond_kwargs
            or hidden_states.ndim != 3 or not fln.covered(self.norm1, hidden_states)):
        return type(self).forward(self, hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask,
                                  timestep, cross_attention_kwargs, class_labels, added_cond_kwargs)
    h = hidden_states
    a = self.attn1(self.norm1(h), attention_mask=attention_mask)
    if self.attn2 is not None:
        h, x = _add_norm(a, h, self.norm2)
        a = self.attn2(x, encoder_hidden_states=encoder_hidden_states, attention_mask=encoder_attention_mask)
    h, x = _add_norm(a, h, self.norm3)
    return self.ff(x) + h


def _plain_block(sub, cls) -> bool:
    if type(sub) is not cls:
        return False
    norms = [sub.norm1, sub.norm3] + ([sub.norm2] if sub.attn2 is not None else [])
    return (sub.norm_type == "layer_norm" and sub.pos_embed is None
            and sub._chunk_size is None and not sub.only_cross_attention
            and all(type(n) is torch.nn.LayerNorm and n.elementwise_affine
                    and not any(p.requires_grad for p in n.parameters()) for n in norms))


def install_fast_block(module) -> int:
    """Give every plain BasicTransformerBlock in `module` the fused residual + LayerNorm forward (if the
    LayerNorm kernels pass their check on the module's device); returns how many."""
    from diffusers.models.attention import BasicTransformerBlock

    return install_forward(module, _forward, lambda sub: _plain_block(sub, BasicTransformerBlock), fln.available)


def installed(module) -> int:
    return count_patched(module, _forward)


def uninstall_fast_block(module) -> int:
    return unpatch(module, _forward)
