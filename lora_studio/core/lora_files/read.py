"""Reading any supported LoRA file (diffusers / peft / kohya, through diffusers' own converters)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lora_studio.core.lora_files.forms import (LoraFile, LoraModule, _float, _header, _split_pair_key,
                                               canonical_name, file_format, lora_family)
from lora_studio.core.models.loader import PICKLE_SUFFIXES, corrupted, load_pickled_state_dict, read_header
from lora_studio.errors import LoraStudioError

def _load_tensors(path: Path) -> tuple[dict, dict[str, str]]:
    shapes, meta = _header(path)  # validates the file before any tensor is read
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return load_pickled_state_dict(path), meta
    from safetensors.torch import load_file

    try:
        return load_file(str(path)), meta
    except Exception as exc:
        raise corrupted(path, str(exc).splitlines()[0][:120]) from None


def _pipeline_class(family: str | None):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def _peft_alphas(meta: dict[str, str]) -> dict[str, dict]:
    """Per component: lora_alpha, r, alpha_pattern, rank_pattern from diffusers' ``lora_adapter_metadata``."""
    raw = meta.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        packed = json.loads(raw)
    except ValueError:
        return {}
    out: dict[str, dict] = {}
    for key, value in packed.items():
        comp, _, name = key.partition(".")
        out.setdefault(comp, {})[name] = value
    return out


def _pattern_value(module: str, patterns: dict, default):
    for pat, value in (patterns or {}).items():
        if module == pat or module.endswith("." + pat) or re.fullmatch(pat, module):
            return value
    return default


def _config_object(config):
    """diffusers' SGM-block mapping reads ``config.layers_per_block``: an attribute object, not a dict."""
    if isinstance(config, dict):
        from types import SimpleNamespace

        return SimpleNamespace(**config)
    return config


def read_lora(path, family: str | None = None, unet_config=None) -> LoraFile:
    """Read any supported LoRA file into the plain form (diffusers converts kohya / A1111 names)."""
    path = Path(path)
    sd, meta = _load_tensors(path)
    return lora_from_state_dict(sd, meta, path=path, family=family, unet_config=unet_config)


def lora_from_state_dict(sd: dict, meta: dict[str, str] | None = None, path: Path | None = None,
                         family: str | None = None, unet_config=None) -> LoraFile:
    meta = dict(meta or {})
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    fmt = file_format(sd.keys())
    if fmt == "unknown":
        raise LoraStudioError(f"{path or 'state dict'}: no LoRA weights found (no lora_A/lora_B, lora_down/lora_up, "
                              "hada_w1_a or lokr_w1 keys).", "is this a base model or another adapter type?")
    family = family or lora_family(shapes, meta)
    if fmt == "lycoris":
        return _read_lycoris(sd, meta, path, family, unet_config)
    if any("dora_scale" in k or "lora_magnitude_vector" in k for k in sd):
        raise LoraStudioError(f"{path}: DoRA adapters are not supported yet.", "use a plain LoRA.")
    if fmt == "kohya":
        if family == "sdxl" and unet_config is None and any("input_blocks" in k or "output_blocks" in k for k in sd):
            unet_config = _recorded_unet_config(meta, "sdxl", None)
        kwargs = {"unet_config": _config_object(unet_config)} if unet_config is not None else {}
        try:
            converted, network_alphas = _pipeline_class(family).lora_state_dict(dict(sd), **kwargs)
        except LoraStudioError:
            raise
        except Exception as exc:
            raise LoraStudioError(f"{path}: diffusers could not read this kohya LoRA: {str(exc).splitlines()[0][:200]}",
                                  "the file may be damaged or made for another model; `lora-studio inspect` "
                                  "shows what it holds.") from None
        network_alphas = network_alphas or {}
    else:
        converted, network_alphas = sd, {}
    peft = _peft_alphas(meta)
    fallback_alpha = _float(meta.get("lora_studio.alpha") or meta.get("ss_network_alpha"))
    pairs: dict[str, dict[str, object]] = {}
    for key, tensor in converted.items():
        split = _split_pair_key(key.removeprefix("base_model.model."))
        if split is None:
            if key.endswith(".alpha"):
                continue
            raise LoraStudioError(f"{path}: unexpected key {key!r} in a LoRA file.",
                                  "only plain LoRA layers (down/up pairs, optional alpha) are supported.")
        name, part = split
        pairs.setdefault(canonical_name(name), {})[part] = tensor
    alphas_by_module = {}
    for key, value in network_alphas.items():
        split = _split_pair_key(key.removesuffix(".alpha")) or (key.removesuffix(".alpha"), "down")
        alphas_by_module[canonical_name(split[0])] = float(value)
    modules: dict[str, LoraModule] = {}
    for name, pair in pairs.items():
        if "down" not in pair or "up" not in pair:
            raise LoraStudioError(f"{path}: layer {name} has only half of its LoRA pair.", "the file is damaged.")
        rank = int(pair["down"].shape[0])
        comp, _, module = name.partition(".")
        alpha = None
        if name in alphas_by_module:
            alpha = alphas_by_module[name]
        elif comp in peft:
            cfg = peft[comp]
            plain = module.removeprefix("text_model.") if comp != "unet" else module
            alpha = float(_pattern_value(plain, cfg.get("alpha_pattern"), cfg.get("lora_alpha", rank)))
            r_cfg = int(_pattern_value(plain, cfg.get("rank_pattern"), cfg.get("r", rank)))
            if r_cfg != rank:  # a stale config: trust the tensors' rank and keep the configured scale
                alpha = alpha * rank / r_cfg
        elif network_alphas:
            alpha = float(rank)
        elif fallback_alpha is not None:
            alpha = fallback_alpha
        else:
            alpha = float(rank)
        modules[name] = LoraModule(pair["down"], pair["up"], alpha)
    return LoraFile(path, fmt, family, modules, meta)


def default_unet_config(family: str) -> dict:
    from lora_studio.core.models.loader import shipped_config_dir

    return json.loads((shipped_config_dir(family) / "unet" / "config.json").read_text())


def unet_config_for(base_model) -> dict:
    """The UNet config of a base model (name, folder or file), without loading its weights."""
    from lora_studio.core.models.loader import EMBEDDED_CONFIG_KEY, resolve_model

    ref = resolve_model(base_model)
    if ref.kind in ("diffusers", "demo") and (ref.path / "unet" / "config.json").is_file():
        return json.loads((ref.path / "unet" / "config.json").read_text())
    if ref.kind == "demo":
        from lora_studio.core.demo import build

        return dict((build.make_sdxl_unet() if ref.family == "sdxl" else build.make_sd1_unet()).config)
    _, meta = read_header(ref.path)
    if EMBEDDED_CONFIG_KEY in meta:
        cfg = json.loads(meta[EMBEDDED_CONFIG_KEY])["configs"]["unet/config.json"]
        return json.loads(cfg) if isinstance(cfg, str) else cfg
    return default_unet_config(ref.family)




def _recorded_unet_config(meta: dict[str, str], family: str, unet_config):
    """The given UNet config, else that of the base model the file records, else the family's standard one."""
    if unet_config is not None:
        return unet_config
    if meta.get("lora_studio.base_model"):
        try:
            return unet_config_for(meta["lora_studio.base_model"])
        except LoraStudioError:
            pass  # the base model is not on this machine: the family's standard layout
    return default_unet_config(family)


def _read_lycoris(sd: dict, meta: dict[str, str], path, family: str | None, unet_config) -> LoraFile:
    """LoHa / LoKr layers, named as LyCORIS writes them (``lora_unet_*``) or as peft does (``unet.<module>``)."""
    from lora_studio.core.lora_files.kohya import kohya_layer_names, text_encoder_name
    from lora_studio.core.lora_files.lycoris import LycorisModule, from_peft, network_of, split_lycoris_key

    network, family = network_of(sd), family or "sd1"
    groups: dict[str, dict] = {}
    alphas: dict[str, float] = {}
    for key, tensor in sd.items():
        if key.endswith(".alpha"):
            alphas[key[: -len(".alpha")]] = float(tensor)
            continue
        split = split_lycoris_key(key)
        if split is None:
            raise LoraStudioError(f"{path}: unexpected key {key!r} in a LyCORIS {network} file.",
                                  "only LoHa / LoKr layers (with optional alpha) are read; the file may mix types.")
        groups.setdefault(split[0], {})[split[1]] = tensor
    names = kohya_layer_names(family, _recorded_unet_config(meta, family, unet_config))
    shapes = dict(names.values())
    peft = _peft_alphas(meta)
    modules = {}
    for layer, parts in groups.items():
        if layer.startswith("lora_"):  # LyCORIS / kohya naming: alpha tensors, the loaders' scale convention
            plain, shape = names.get(layer) or (text_encoder_name(layer, family), None)
            if plain is None:
                raise LoraStudioError(f"{path}: layer {layer} is not in a {family} model.",
                                      "use the base model the LoRA was trained for (`lora-studio inspect` names it).")
            m = LycorisModule(network, parts, 0.0, shape)
            m.alpha = alphas.get(layer, float(m.rank))  # no alpha: the readers scale by 1
        else:  # peft naming (a training run's pytorch_lora_weights file): peft's scale convention
            plain = canonical_name(layer)
            cfg = peft.get(plain.split(".")[0], {})
            rank = int(cfg.get("r", 1))
            m = from_peft(network, parts, float(cfg.get("alpha", rank)), rank, shapes.get(plain))
        modules[plain] = m
    return LoraFile(path, "lycoris", family, modules, meta, network)
