"""``inspect``: facts about a LoRA or a checkpoint, from the file's header."""

from __future__ import annotations

from pathlib import Path

from lora_studio.core.lora_files.forms import (_float, _header, _split_pair_key, cross_attention_width,
                                               family_name, file_format, lora_family)
from lora_studio.core.lora_files.lycoris import NETWORK_NAMES, network_of, split_lycoris_key
from lora_studio.core.lora_files.read import _peft_alphas

def inspect_file(path) -> dict:
    """Facts about a LoRA or a checkpoint, from the header only."""
    from lora_studio.core.models.loader import detect_family_from_keys

    path = Path(path)
    shapes, meta = _header(path)
    fmt = file_format(shapes)
    if fmt == "unknown":
        family, variant = detect_family_from_keys(shapes, str(path))
        n_params = 0
        for s in shapes.values():
            n = 1
            for d in s:
                n *= d
            n_params += n
        return {"file": str(path), "kind": "checkpoint", "family": family, "family_name": family_name(family),
                "variant": variant, "tensors": len(shapes), "parameters": n_params,
                "metadata": {k: v for k, v in meta.items() if k != "lora_studio.diffusers_config"}}
    family = lora_family(shapes, meta)
    ranks, targets, comps = set(), set(), {}
    network = network_of(shapes)
    for key, shape in shapes.items():
        split = _split_pair_key(key) or _lycoris_part(key, shape, ranks)
        if split is None:
            continue
        name, part = split
        if part == "down":
            ranks.add(int(shape[0]))
        comp = ("unet" if name.startswith(("lora_unet_", "unet.")) else
                "text_encoder_2" if name.startswith(("lora_te2_", "text_encoder_2.")) else "text_encoder")
        comps[comp] = comps.get(comp, 0) + (part in ("down", "layer"))
        flat = name.replace(".", "_")
        leaf = next((t for t in _KNOWN_TARGETS if flat.endswith("_" + t.replace(".", "_"))), flat.rsplit("_", 1)[-1])
        targets.add(leaf)
    alphas = sorted({_float(meta.get("ss_network_alpha"))} - {None})
    peft = _peft_alphas(meta)
    alphas = sorted(set(alphas) | {float(v["lora_alpha"]) for v in peft.values() if "lora_alpha" in v})
    if fmt == "lycoris":
        alphas = sorted({float(v["alpha"]) for v in peft.values() if "alpha" in v})
    if fmt in ("kohya", "lycoris"):
        alphas = sorted(set(alphas) | {float(v) for v in _kohya_alpha_values(path, shapes)})
    elif not alphas and meta.get("lora_studio.alpha"):
        alphas = [float(meta["lora_studio.alpha"])]
    return {"file": str(path), "kind": "lora", "format": fmt, "network": NETWORK_NAMES[network], "family": family,
            "family_name": family_name(family) if family else "unknown", "ranks": sorted(ranks),
            "alphas": alphas, "layers": comps, "target_modules": sorted(targets),
            "cross_attention_width": cross_attention_width(shapes),
            "metadata": {k: v for k, v in meta.items() if k != "lora_adapter_metadata"}}


def _lycoris_part(key: str, shape, ranks: set) -> tuple[str, str] | None:
    """A LoHa / LoKr key as (layer, 'layer') once per layer (its first part), else (layer, 'other'); adds the
    rank a decomposed part shows to ``ranks``."""
    split = split_lycoris_key(key)
    if split is None:
        return None
    layer, part = split
    if part in ("hada_w1_b", "lokr_w1_b", "lokr_w2_b"):
        ranks.add(int(shape[0]))
    return layer, "layer" if part in ("hada_w1_a", "lokr_w1", "lokr_w1_a") else "other"


def training_summary(meta: dict[str, str]) -> list[tuple[str, str]]:
    """(label, value) of the training metadata LoRA managers show, in a reader's order."""
    return [(label, _shown_value(key, meta[key])) for key, label in _SHOWN if meta.get(key)]


_SHOWN = [("modelspec.trigger_phrase", "trigger phrase"), ("ss_tag_frequency", "tags"),
          ("ss_num_train_images", "training images"), ("modelspec.resolution", "trained at"),
          ("ss_steps", "steps"), ("ss_seed", "seed"), ("ss_sd_model_name", "base model"),
          ("ss_new_sd_model_hash", "base model sha256"), ("ss_training_started_at", "started"),
          ("ss_training_finished_at", "finished")]


def _shown_value(key: str, value: str) -> str:
    if key == "ss_tag_frequency":  # the most frequent tags across the caption folders
        import json
        from collections import Counter

        try:
            counts = sum((Counter(v) for v in json.loads(value).values()), Counter())
        except (ValueError, TypeError, AttributeError):
            return value[:200]
        return ", ".join(f"{tag} ({n})" for tag, n in counts.most_common(12))
    if key.startswith("ss_training_") and _float(value) is not None:
        import datetime as dt

        return dt.datetime.fromtimestamp(float(value), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return value


_KNOWN_TARGETS = ["to_out.0", "to_q", "to_k", "to_v", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "q_proj",
                  "k_proj", "v_proj", "out_proj", "fc1", "fc2", "conv1", "conv2", "conv_shortcut", "time_emb_proj",
                  "skip_connection", "in_layers_2", "out_layers_3", "emb_layers_1", "conv_in", "conv_out"]


def _kohya_alpha_values(path: Path, shapes) -> set[float]:
    keys = [k for k in shapes if k.endswith(".alpha")]
    if not keys or path.suffix.lower() != ".safetensors":
        return set()
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:  # a handful of scalars, not the weights
        return {float(fh.get_tensor(k)) for k in keys}


