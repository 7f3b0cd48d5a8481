"""LyCORIS LoHa / LoKr layers: read (LyCORIS' kohya-style names or peft's), their weight change, exact LoRA form.

Key layout, as A1111's Lora extension (network_hada / network_lokr), ComfyUI's ``comfy/lora.py`` and the
``lycoris-lora`` package use it: ``lora_unet_<kohya name>.hada_w1_a / hada_w1_b / hada_w2_a / hada_w2_b``
and ``.alpha``; ``.lokr_w1`` (or ``lokr_w1_a`` / ``lokr_w1_b``), ``.lokr_w2`` (or ``lokr_w2_a`` /
``lokr_w2_b``) and ``.alpha``. Scale conventions, which the readers agree on:
- LoHa: ``(w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank``, rank = ``hada_w1_b.shape[0]``;
- LoKr: ``kron(w1, w2) * alpha / dim`` where dim is the rank of a decomposed factor (``lokr_w2_b`` first,
  else ``lokr_w1_b``); with no decomposed factor the readers use scale 1 and ignore alpha.
peft's LoKr always scales by alpha / r, so its scale is folded into w1 when a file is read from peft names.
Conv layers keep ``hada_w*_b`` flattened (rank, in * kh * kw) and are reshaped to the base layer's weight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NETWORK_NAMES = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr"}
LOHA_PARTS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LOKR_PARTS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
_PART = re.compile(r"^(.*)\.(hada_w[12]_[ab]|hada_t[12]|lokr_w[12](?:_[ab])?|lokr_t2)(?:\.weight)?$")


def network_of(keys) -> str:
    """'loha' / 'lokr' for LyCORIS keys (either naming), else 'lora'."""
    for key in keys:
        if ".hada_w1_a" in key:
            return "loha"
        if ".lokr_w1" in key:
            return "lokr"
    return "lora"


def split_lycoris_key(key: str) -> tuple[str, str] | None:
    """'<layer>.hada_w1_a' -> ('<layer>', 'hada_w1_a'); None for other keys."""
    match = _PART.match(key)
    return (match.group(1), match.group(2)) if match else None


@dataclass
class LycorisModule:
    kind: str  # "loha" | "lokr"
    tensors: dict  # part name ('hada_w1_a', 'lokr_w2', ...) -> tensor
    alpha: float
    shape: tuple | None = None  # the base layer's weight shape, when known (conv deltas need it)

    @property
    def rank(self) -> int:
        t = self.tensors
        if self.kind == "loha":
            return int(t["hada_w1_b"].shape[0])
        for part in ("lokr_w2_b", "lokr_w1_b"):  # ComfyUI takes w2's rank when both are decomposed
            if part in t:
                return int(t[part].shape[0])
        return 0  # no decomposed factor: the loaders scale by 1

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.rank else 1.0

    def _factor(self, i: int):
        t = self.tensors
        if f"lokr_w{i}" in t:
            return t[f"lokr_w{i}"].float()
        if f"lokr_t{i}" in t:
            raise ValueError("Tucker-decomposed LoKr layers (lokr_t2) are not supported")
        return t[f"lokr_w{i}_a"].float() @ t[f"lokr_w{i}_b"].float()

    def delta(self):
        """The full weight change, shaped like the base layer's weight when the shape is known."""
        import torch

        t = self.tensors
        if self.kind == "loha":
            if "hada_t1" in t:
                raise ValueError("Tucker-decomposed LoHa layers (hada_t1) are not supported")
            w = (t["hada_w1_a"].float() @ t["hada_w1_b"].float()) * (t["hada_w2_a"].float() @ t["hada_w2_b"].float())
        else:
            w1, w2 = self._factor(1), self._factor(2)
            if w2.ndim == 4:
                w1 = w1[:, :, None, None]
            w = torch.kron(w1, w2)
        w = w * self.scale
        return w.reshape(self.shape) if self.shape is not None else w

    def as_lora(self):
        """The same weight change as an exact LoRA pair, so the preview's LoRA machinery (weights, several
        adapters, fusing) carries LoHa / LoKr unchanged. LoHa and LoKr with a decomposed w2 factor exactly
        by construction (ranks r*r and in1*r); otherwise through the SVD of the change (numerical rank)."""
        from lora_studio.core.lora_files.forms import LoraModule

        pair = self._structured_pair()
        if pair is None:
            return self._svd_pair()
        up, down = pair
        shape = self.shape or (up.shape[0], down.shape[1])
        k = down.shape[0]
        if len(shape) == 4:
            up, down = up.reshape(shape[0], k, 1, 1), down.reshape(k, *shape[1:])
        return LoraModule(down.contiguous(), (up * self.scale).contiguous(), float(k))

    def _structured_pair(self):
        import torch

        t = self.tensors
        if self.kind == "loha" and "hada_t1" not in t:
            # (A1 B1) * (A2 B2) = sum_ij (A1[:, i] * A2[:, j]) (B1[i] * B2[j]): rank r*r, no decomposition
            a1, b1, a2, b2 = (t[k].float() for k in LOHA_PARTS)
            up = (a1[:, :, None] * a2[:, None, :]).reshape(a1.shape[0], -1)
            down = (b1[:, None, :] * b2[None, :, :]).reshape(-1, b1.shape[1])
            return up, down
        if self.kind == "lokr" and "lokr_w2_a" in t and "lokr_t2" not in t:
            # kron(W1, A2 B2) = kron(W1, A2) @ kron(I, B2)  (mixed-product rule), rank in1 * r
            w1, a2, b2 = self._factor(1), t["lokr_w2_a"].float(), t["lokr_w2_b"].float()
            eye = torch.eye(w1.shape[1], dtype=w1.dtype)
            return torch.kron(w1, a2), torch.kron(eye, b2)
        return None

    def _svd_pair(self):
        import torch

        from lora_studio.core.lora_files.forms import LoraModule

        delta = self.delta()
        flat = delta.reshape(delta.shape[0], -1)
        u, s, vh = torch.linalg.svd(flat, full_matrices=False)
        k = max(1, int((s > s[0] * 1e-6).sum())) if s.numel() and s[0] > 0 else 1
        root = s[:k].sqrt()
        up, down = (u[:, :k] * root), (root[:, None] * vh[:k])
        if delta.ndim == 4:
            up, down = up.reshape(delta.shape[0], k, 1, 1), down.reshape(k, *delta.shape[1:])
        return LoraModule(down.contiguous(), up.contiguous(), float(k))

    def export_tensors(self) -> dict:
        """Parts as written to a file: contiguous CPU tensors."""
        return {part: t.detach().cpu().contiguous() for part, t in self.tensors.items()}


def from_peft(kind: str, parts: dict, alpha: float, rank: int, shape=None) -> LycorisModule:
    """A layer from peft's state dict (peft scales by alpha / r always): rewritten in LyCORIS' convention."""
    m = LycorisModule(kind, dict(parts), float(alpha), shape)
    if kind == "lokr":
        fold = (float(alpha) / rank) / m.scale
        key = "lokr_w1" if "lokr_w1" in m.tensors else "lokr_w1_a"
        m.tensors[key] = m.tensors[key] * fold
    return m
