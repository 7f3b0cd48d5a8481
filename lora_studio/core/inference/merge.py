"""Merge LoRAs into one (exact by concatenating ranks, or SVD to a chosen rank) and fuse LoRAs into a base model.

Concatenation is exact: ``sum_i w_i * s_i * B_i A_i = [w_1 s_1 B_1 | w_2 s_2 B_2 ...] @ [A_1; A_2; ...]``, so the
merged file at weight 1 is the blend at (w_1, w_2, ...). SVD keeps the best rank-k approximation of each
layer's summed change and reports what it lost: ``sqrt(sum of dropped singular values^2 / total)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lora_studio.core.lora_files import NETWORK_NAMES, LoraFile, LoraModule, family_name, read_lora
from lora_studio.errors import LoraStudioError


@dataclass
class MergeResult:
    lora: LoraFile
    rank: int  # 0 = exact (concatenated ranks)
    relative_error: float = 0.0  # Frobenius, over all layers together
    worst_layer_error: float = 0.0
    worst_layer: str = ""
    layer_errors: dict[str, float] = field(default_factory=dict)


def _load_items(items, unet_config=None) -> list[tuple[LoraFile, float]]:
    out = []
    for item, weight in items:
        lora = item if isinstance(item, LoraFile) else read_lora(item, unet_config=unet_config)
        out.append((lora, float(weight)))
    if not out:
        raise LoraStudioError("nothing to merge.", "give at least one LoRA file with a weight.")
    for lora, _ in out:
        if lora.network != "lora":
            network = NETWORK_NAMES[lora.network]
            raise LoraStudioError(
                f"{lora.path.name if lora.path else 'a LoRA'} is a LyCORIS {network} file: its layers are not "
                f"up/down pairs, so merging it into a LoRA file is not defined.",
                "fuse it into a base model instead (lora-studio merge --lora FILE:WEIGHT --model M --fuse-out "
                "OUT), or load it beside the others in the preview.")
    families = {lora.family for lora, _ in out if lora.family}
    if len(families) > 1:
        names = ", ".join(f"{lora.path.name if lora.path else '?'} ({family_name(lora.family)})" for lora, _ in out
                          if lora.family)
        raise LoraStudioError(f"these LoRAs are for different base models: {names}.",
                              "merge only LoRAs made for the same family.")
    for lora, _ in out:
        lora.family = lora.family or next(iter(families), None)
    return out


def _stacked(parts: list[tuple[LoraModule, float]]):
    """(up_cat (out, R), down_cat (R, in...)) with weight * scale folded into up."""
    import torch

    downs = [m.down.float() for m, _ in parts]
    ups = [m.up.float() * (w * m.scale) for m, w in parts]
    kernel = {tuple(d.shape[1:]) for d in downs}
    if len(kernel) > 1:
        raise LoraStudioError("two LoRAs disagree on a layer's shape.", "merge only LoRAs for the same base model.")
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0)


def merge(items, rank: int = 0, unet_config=None, dtype=None) -> MergeResult:
    """``items``: ``[(path or LoraFile, weight)]``. ``rank`` 0 = exact concatenation; k > 0 = SVD to rank k."""
    import torch

    loaded = _load_items(items, unet_config)
    by_module: dict[str, list[tuple[LoraModule, float]]] = {}
    for lora, w in loaded:
        if w == 0.0:
            continue
        for name, m in lora.modules.items():
            by_module.setdefault(name, []).append((m, w))
    modules: dict[str, LoraModule] = {}
    lost = total = 0.0
    errors: dict[str, float] = {}
    for name, parts in by_module.items():
        up, down = _stacked(parts)
        conv = down.ndim == 4
        R = down.shape[0]
        if rank <= 0:
            new_up, new_down = up, down
        else:
            u2 = up.reshape(up.shape[0], R)
            d2 = down.reshape(R, -1)
            qu, ru = torch.linalg.qr(u2.double())
            qd, rd = torch.linalg.qr(d2.T.double())
            uc, s, vch = torch.linalg.svd(ru @ rd.T)
            k = min(rank, s.numel())
            root = s[:k].sqrt()
            new_up = ((qu @ uc[:, :k]) * root).float()
            new_down = (root[:, None] * (vch[:k] @ qd.T)).float()
            dropped = float((s[k:] ** 2).sum())
            kept = float((s ** 2).sum())
            lost += dropped
            total += kept
            errors[name] = math.sqrt(dropped / kept) if kept > 0 else 0.0
            if conv:
                new_up = new_up.reshape(up.shape[0], k, 1, 1)
                new_down = new_down.reshape(k, *down.shape[1:])
        if dtype is not None:
            new_up, new_down = new_up.to(dtype), new_down.to(dtype)
        modules[name] = LoraModule(new_down.contiguous(), new_up.contiguous(), float(new_down.shape[0]))
    family = loaded[0][0].family
    meta = {"lora_studio.merged_from": repr([(str(lora.path), w) for lora, w in loaded])}
    for key in ("lora_studio.base_model",):
        if key in loaded[0][0].metadata:
            meta[key] = loaded[0][0].metadata[key]
    result = MergeResult(LoraFile(None, "diffusers", family, modules, meta), rank,
                         math.sqrt(lost / total) if total > 0 else 0.0, layer_errors=errors)
    if errors:
        result.worst_layer = max(errors, key=errors.get)
        result.worst_layer_error = errors[result.worst_layer]
    return result


def save_merged(result: MergeResult, out_path, fmt: str = "diffusers", unet_config=None) -> Path:
    from lora_studio.core.lora_files import write_diffusers, write_kohya

    meta = {"lora_studio.merge_rank": str(result.rank),
            "lora_studio.merge_relative_error": repr(result.relative_error)}
    if fmt == "kohya":
        if result.lora.family is None:
            raise LoraStudioError("the merged LoRAs do not say which base family they are for.",
                                  "save the merge in diffusers format, or convert it later with --model.")
        return write_kohya(result.lora, out_path, unet_config=unet_config, extra_metadata=meta)
    return write_diffusers(result.lora, out_path, extra_metadata=meta)


# ----------------------------------------------------------------------------- fuse into the base

def _find_module(pipe, name: str):
    comp, _, module = name.partition(".")
    model = getattr(pipe, comp, None)
    if model is None:
        return None
    mods = dict(model.named_modules())
    mod = mods.get(module)
    if mod is None and module.startswith("text_model."):
        mod = mods.get(module[len("text_model."):])
    return getattr(mod, "base_layer", mod) if mod is not None else None


def fuse_into(pipe, items) -> int:
    """Add ``sum(w * delta)`` of each ``(path or LoraFile, weight)`` to the pipeline's weights; returns layers changed."""
    import torch

    from lora_studio.core.lora_files import check_fits

    changed = set()
    for item, weight in items:
        if not isinstance(item, LoraFile):
            check_fits(item, pipe)
            item = read_lora(item, unet_config=pipe.unet.config)
        with torch.no_grad():
            for name, m in item.modules.items():
                mod = _find_module(pipe, name)
                if mod is None:
                    raise LoraStudioError(f"layer {name} of the LoRA is not in the model.",
                                          "use the base model the LoRA was trained on.")
                w = mod.weight
                # LoHa / LoKr conv changes may come flattened: the base weight gives the shape
                w.copy_((w.float() + float(weight) * m.delta().to(w.device).reshape(w.shape)).to(w.dtype))
                changed.add(name)
    return len(changed)


def fuse_and_save(model, items, out_path, fmt: str | None = None, dtype=None) -> Path:
    """Load ``model``, fuse the LoRAs, save a diffusers folder or (``.safetensors`` / fmt='single_file') one file."""
    import torch

    from lora_studio.core.io import atomic_dir
    from lora_studio.core.models.loader import load_pipeline, resolve_model
    from lora_studio.core.models.original_layout import save_single_file

    out_path = Path(out_path)
    fmt = fmt or ("single_file" if out_path.suffix.lower() == ".safetensors" else "diffusers")
    pipe = model if hasattr(model, "unet") else load_pipeline(model, torch_dtype=torch.float32, device="cpu")
    fuse_into(pipe, items)
    if dtype is not None:
        pipe = pipe.to(dtype=dtype)
    if fmt == "single_file":
        family = None if hasattr(model, "unet") else resolve_model(model).family
        return save_single_file(pipe, out_path, family=family)
    with atomic_dir(out_path) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
    return out_path
