"""Writing LoRA files: the kohya layout every webui reads, and diffusers' peft layout."""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

from lora_studio.core.lora_files.forms import (BASE_MODEL_VERSION, COMPONENTS, KOHYA_TE, MODELSPEC_ARCH, LoraFile,
                                               _num, _with_text_model, family_name)
from lora_studio.core.lora_files.lycoris import LycorisModule
from lora_studio.core.lora_files.read import default_unet_config, read_lora, unet_config_for
from lora_studio.errors import LoraStudioError

def kohya_name(name: str, family: str, unet_config=None) -> str:
    """'unet.down_blocks.1.attentions.0....to_q' -> 'lora_unet_input_blocks_4_1_..._to_q' (SDXL) etc."""
    comp, _, module = name.partition(".")
    if comp == "unet":
        if family == "sdxl":
            from lora_studio.core.models.original_layout import unet_name_to_original

            module = unet_name_to_original(module, unet_config or default_unet_config("sdxl"))
        return "lora_unet_" + module.replace(".", "_")
    prefix = KOHYA_TE.get(family, KOHYA_TE["sd1"]).get(comp)
    if prefix is None:
        raise LoraStudioError(f"{comp} LoRA layers do not exist in a {family_name(family)} model.",
                              "the LoRA and the family given for it disagree.")
    return prefix + _with_text_model(module).replace(".", "_")


_TE_LAYER = re.compile(r"^text_model_encoder_layers_(\d+)_(self_attn|mlp)_(\w+)$")


def kohya_layer_names(family: str, unet_config=None) -> dict[str, tuple[str, tuple]]:
    """kohya layer name -> (plain name, weight shape) of every UNet Linear/Conv2d, from the config alone."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    cfg = dict(unet_config or default_unet_config(family))
    with init_empty_weights():  # names and shapes without allocating the weights
        unet = UNet2DConditionModel.from_config(cfg)
    out = {}
    for mod_name, module in unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            try:
                out[kohya_name("unet." + mod_name, family, cfg)] = ("unet." + mod_name, tuple(module.weight.shape))
            except KeyError:
                continue
    return out


def text_encoder_name(layer: str, family: str) -> str | None:
    """'lora_te1_text_model_encoder_layers_0_self_attn_q_proj' -> 'text_encoder.text_model.encoder.layers.0....'."""
    for comp, prefix in KOHYA_TE.get(family, KOHYA_TE["sd1"]).items():
        match = _TE_LAYER.match(layer[len(prefix):]) if layer.startswith(prefix) else None
        if match:
            return f"{comp}.text_model.encoder.layers.{match[1]}.{match[2]}.{match[3]}"
    return None


def kohya_module_map(pipe) -> dict[str, tuple[str, object]]:
    """kohya layer name -> (plain name, module) for every Linear/Conv2d of a loaded pipeline."""
    import torch

    family = pipeline_family(pipe)
    out = {}
    for comp in COMPONENTS:
        model = getattr(pipe, comp, None)
        if model is None:
            continue
        for mod_name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and ".lora_" not in mod_name:
                # A layer that a loaded adapter already wraps (peft) is reached as ``<layer>.base_layer``: map the
                # layer's own name to it, so a second LoRA is checked against the same layers as the first.
                name = f"{comp}.{mod_name.removesuffix('.base_layer')}"
                try:
                    out[kohya_name(name, family, pipe.unet.config)] = (name, module)
                except KeyError:
                    continue
    return out


def pipeline_family(pipe) -> str:
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    return "sd2" if pipe.unet.config.cross_attention_dim == 1024 else "sd1"


def export_kohya(diffusers_lora_path, out_path, family: str | None = None, alpha: float | None = None,
                 unet_config=None, base_model=None, tag_frequency: dict | None = None, title: str | None = None,
                 dtype=None, extra_metadata: dict | None = None) -> Path:
    """Write the kohya/A1111 export of a LoRA file (any readable format), atomically; returns ``out_path``.

    ``family`` ('sd1'/'sd2'/'sdxl') and ``alpha`` default to what the file records. ``alpha`` is the alpha
    the adapter was trained with; the file's up/down weights are exported unchanged, so the ``alpha`` tensor
    written is that real alpha (diffusers' converter writes alpha = rank). For SDXL the UNet block names need
    the base UNet's config: ``unet_config``, else that of ``base_model`` (or the file's recorded base model),
    else SDXL 1.0's.
    """
    src = read_lora(diffusers_lora_path)
    meta = src.metadata
    family = family or src.family
    if family not in BASE_MODEL_VERSION:
        raise LoraStudioError(f"{diffusers_lora_path}: the file does not say which base model family it is for.",
                              "pass the family (sd1, sd2 or sdxl) or the base model.")
    if src.family and src.family != family:
        raise LoraStudioError(f"{diffusers_lora_path} is a LoRA for {family_name(src.family)}, "
                              f"not {family_name(family)}.", "export it with its own family.")
    if family == "sdxl" and unet_config is None:
        base_model = base_model or meta.get("lora_studio.base_model")
        unet_config = unet_config_for(base_model) if base_model else default_unet_config("sdxl")
    if alpha is not None and src.network == "lora":  # LoHa / LoKr files record their alpha themselves
        ranks = {m.rank for m in src.modules.values()}
        for m in src.modules.values():
            m.alpha = float(alpha) if len(ranks) == 1 else m.alpha
    lora = LoraFile(src.path, "lycoris" if src.network != "lora" else "kohya", family, src.modules, meta,
                    src.network)
    if tag_frequency is None and meta.get("lora_studio.tag_frequency"):
        tag_frequency = json.loads(meta["lora_studio.tag_frequency"])
    return write_kohya(lora, out_path, unet_config=unet_config, tag_frequency=tag_frequency,
                       title=title or Path(out_path).stem, dtype=dtype, extra_metadata=extra_metadata)


def write_kohya(lora: LoraFile, out_path, unet_config=None, tag_frequency: dict | None = None,
                title: str | None = None, dtype=None, extra_metadata: dict | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    from lora_studio.core.io import write_with

    family = lora.family
    tensors = {}
    for name, m in lora.modules.items():
        k = kohya_name(name, family, unet_config)
        if isinstance(m, LycorisModule):  # LyCORIS layout: the same layer names, its own part names
            parts = m.export_tensors()
        else:
            parts = {"lora_down.weight": m.down.detach().cpu(), "lora_up.weight": m.up.detach().cpu()}
        for part, t in parts.items():
            tensors[f"{k}.{part}"] = (t.to(dtype) if dtype is not None else t).contiguous()
        tensors[k + ".alpha"] = torch.tensor(float(m.alpha), dtype=torch.float32)
    ranks, alphas = lora.ranks, lora.alphas
    meta = {
        "ss_base_model_version": BASE_MODEL_VERSION[family],
        "ss_v2": str(family == "sd2"),
        "ss_network_module": "lycoris.kohya" if lora.network in ("loha", "lokr") else "networks.lora",
        **({"ss_network_args": json.dumps({"algo": lora.network})} if lora.network in ("loha", "lokr") else {}),
        "ss_network_dim": str(max(ranks)),
        "ss_network_alpha": _num(alphas[0] if len(alphas) == 1 else max(alphas)),
        "ss_tag_frequency": json.dumps(tag_frequency or {}),
        "ss_output_name": title or Path(out_path).stem,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": MODELSPEC_ARCH[family],
        "modelspec.implementation": ("https://github.com/Stability-AI/generative-models" if family == "sdxl"
                                     else "diffusers"),
        "modelspec.title": title or Path(out_path).stem,
        "modelspec.resolution": "1024x1024" if family == "sdxl" else ("768x768" if family == "sd2" else "512x512"),
        "modelspec.date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.encoder_layer": "1",
    }
    for key in ("lora_studio.base_model", "lora_studio.trigger", "lora_studio.instance_prompt"):
        if key in lora.metadata:
            meta[key] = lora.metadata[key]
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    write_with(out_path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return Path(out_path)


def peft_state_dict(lora: LoraFile, weight: float = 1.0) -> dict:
    """``{comp.module.lora_A/B.weight}`` with scale * weight folded into B: what ``load_lora_weights`` takes as a dict.

    Passing this (rather than the raw file) sidesteps files that mix naming eras, which diffusers' loader
    reads only partly (``convert_state_dict_to_diffusers`` output mixes ``lora.down`` and ``lora_A``).
    """
    out = {}
    for name, m in lora.modules.items():
        if isinstance(m, LycorisModule):
            m = m.as_lora()
        out[name + ".lora_A.weight"] = m.down
        out[name + ".lora_B.weight"] = m.up * (m.scale * weight)
    return out


def write_diffusers(lora: LoraFile, out_path, dtype=None, extra_metadata: dict | None = None) -> Path:
    """A diffusers/peft-format file (``unet.<module>.lora_A.weight``...), loadable by ``load_lora_weights``.

    Alphas are written per component as peft configs in ``lora_adapter_metadata`` when uniform; otherwise
    the scale is folded into ``lora_B`` (alpha = rank), which diffusers reads the same.
    """
    from safetensors.torch import save_file

    from lora_studio.core.io import write_with

    if lora.network != "lora":
        from lora_studio.core.lora_files.lycoris import NETWORK_NAMES

        raise LoraStudioError(f"{lora.path.name if lora.path else 'this LoRA'} is a LyCORIS "
                              f"{NETWORK_NAMES[lora.network]} file, which diffusers' LoRA format cannot hold.",
                              "keep the LyCORIS file (A1111/Forge, ComfyUI and the preview read it), or convert "
                              "it --to kohya for the LyCORIS layout.")
    tensors = {}
    per_comp: dict[str, set] = {}
    for name, m in lora.modules.items():
        per_comp.setdefault(name.split(".")[0], set()).add((m.rank, m.alpha))
    packed = {}
    for comp, pairs in per_comp.items():
        if len(pairs) == 1:
            (r, a), = pairs
            packed.update({f"{comp}.r": r, f"{comp}.lora_alpha": a, f"{comp}.target_modules": sorted(
                {n.split(".")[-1] if not n.endswith(".0") else ".".join(n.split(".")[-2:])
                 for n in lora.modules if n.startswith(comp + ".")})})
    for name, m in lora.modules.items():
        comp = name.split(".")[0]
        up = m.up if f"{comp}.r" in packed else m.up * m.scale
        down = m.down
        if dtype is not None:
            down, up = down.to(dtype), up.to(dtype)
        tensors[name + ".lora_A.weight"] = down.detach().cpu().contiguous()
        tensors[name + ".lora_B.weight"] = up.detach().cpu().contiguous()
    meta = {"format": "pt"}
    if lora.family:
        meta["lora_studio.base_family"] = lora.family
    if packed:
        meta["lora_adapter_metadata"] = json.dumps(packed, sort_keys=True)
    for key, value in lora.metadata.items():
        if key.startswith("lora_studio.") and key not in meta:
            meta[key] = value
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    write_with(out_path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return Path(out_path)


def convert(path, to: str, out_path, family: str | None = None, base_model=None) -> Path:
    if to == "kohya":
        return export_kohya(path, out_path, family=family, base_model=base_model)
    if to == "diffusers":
        unet_config = unet_config_for(base_model) if base_model else None
        return write_diffusers(read_lora(path, family=family, unet_config=unet_config), out_path)
    raise LoraStudioError(f"unknown target format {to!r}.", "use 'kohya' or 'diffusers'.")


