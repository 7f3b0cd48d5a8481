"""LoRA files: read (diffusers / peft / kohya, through diffusers' own converters), inspect, guard, export.

Every LoRA is read into one plain form: ``{"unet.<module>": LoraModule(down, up, alpha)}`` (also
``text_encoder.`` / ``text_encoder_2.``), module names as in the loaded diffusers model, ``down`` (r, in)
and ``up`` (out, r), scale = alpha / r. Merging, fusing and the kohya export work on that form.

The kohya export is what AUTOMATIC1111, ComfyUI and kohya's sd-scripts read: ``lora_unet_*`` named after
diffusers blocks for SD 1.x/2.x and after the original ``input_blocks/middle_block/output_blocks`` for SDXL,
``lora_te_*`` (SD 1.x/2.x) or ``lora_te1_*``/``lora_te2_*`` (SDXL), ``lora_down``/``lora_up``, an ``alpha``
tensor holding the real alpha, and the ``ss_*`` / ``modelspec.*`` metadata those apps look at.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lora_studio.core.models.loader import (PICKLE_SUFFIXES, corrupted, family_name, load_pickled_state_dict,
                                            read_header)
from lora_studio.errors import LoraStudioError

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
KOHYA_TE = {"sd1": {"text_encoder": "lora_te_"}, "sd2": {"text_encoder": "lora_te_"},
            "sdxl": {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}}
BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
MODELSPEC_ARCH = {"sd1": "stable-diffusion-v1/lora", "sd2": "stable-diffusion-v2-768-v/lora",
                  "sdxl": "stable-diffusion-xl-v1-base/lora"}
CROSS_WIDTH_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_PAIR_SUFFIXES = [(".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"),
                  (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
                  (".lora_down.weight", ".lora_up.weight")]


@dataclass
class LoraModule:
    down: object  # torch.Tensor (r, in) or (r, in, kh, kw)
    up: object  # torch.Tensor (out, r) or (out, r, 1, 1)
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self):
        """The full weight change scale * up @ down, shaped like the base layer's weight."""
        d = self.down.reshape(self.rank, -1).float()
        u = self.up.reshape(self.up.shape[0], self.rank).float()
        w = (u @ d) * self.scale
        return w.reshape(self.up.shape[0], *self.down.shape[1:]) if self.down.ndim == 4 else w


@dataclass
class LoraFile:
    path: Path | None
    format: str  # "diffusers" | "kohya"
    family: str | None  # "sd1" | "sd2" | "sdxl" | None when the file does not say
    modules: dict[str, LoraModule]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def ranks(self) -> list[int]:
        return sorted({m.rank for m in self.modules.values()})

    @property
    def alphas(self) -> list[float]:
        return sorted({m.alpha for m in self.modules.values()})


# ----------------------------------------------------------------------------- header-level facts

def _header(path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    return read_header(path)


def file_format(keys) -> str:
    keys = list(keys)
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys):
        return "kohya"
    if any(".lora_A." in k or ".lora.down." in k or ".lora_linear_layer." in k or ".lora_B." in k for k in keys):
        return "diffusers"
    return "unknown"


def _family_from_metadata(meta: dict[str, str]) -> str | None:
    fam = meta.get("lora_studio.base_family")
    if fam in BASE_MODEL_VERSION:
        return fam
    version = meta.get("ss_base_model_version", "")
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2") or meta.get("ss_v2") == "True":
        return "sd2"
    if version.startswith("sd_v1"):
        return "sd1"
    arch = meta.get("modelspec.architecture", "")
    if "stable-diffusion-xl" in arch:
        return "sdxl"
    if "stable-diffusion-v2" in arch:
        return "sd2"
    if "stable-diffusion-v1" in arch:
        return "sd1"
    return None


def cross_attention_width(shapes: dict[str, tuple[int, ...]]) -> int | None:
    """In-features of the LoRA on a cross-attention key projection = the text width the UNet expects."""
    for key, shape in shapes.items():
        if ("attn2.to_k" in key or "attn2_to_k" in key) and ("lora_down" in key or ".down." in key
                                                             or "lora_A" in key):
            return int(shape[1])
    return None


def lora_family(shapes: dict[str, tuple[int, ...]], meta: dict[str, str]) -> str | None:
    fam = _family_from_metadata(meta)
    if fam:
        return fam
    keys = shapes.keys()
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in keys) or any(
            k.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block"))
            for k in keys):
        return "sdxl"
    return CROSS_WIDTH_FAMILY.get(cross_attention_width(shapes) or 0)


_OLD_NAMES = [  # diffusers' attention-processor era names -> module names
    (re.compile(r"\.processor\.(to_[qkv])_lora\."), r".\1.lora."),
    (re.compile(r"\.processor\.to_out_lora\."), ".to_out.0.lora."),
    (re.compile(r"\.self_attn\.to_([qkv])_lora\."), r".self_attn.\1_proj.lora."),
    (re.compile(r"\.self_attn\.to_out_lora\."), ".self_attn.out_proj.lora."),
]


def _split_pair_key(key: str) -> tuple[str, str] | None:
    for pattern, repl in _OLD_NAMES:
        key = pattern.sub(repl, key)
    for down, up in _PAIR_SUFFIXES:
        if key.endswith(down):
            return key[: -len(down)], "down"
        if key.endswith(up):
            return key[: -len(up)], "up"
    return None


# ----------------------------------------------------------------------------- reading

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
        raise LoraStudioError(f"{path or 'state dict'}: no LoRA weights found (no lora_A/lora_B, lora_down/lora_up keys).",
                              "is this a base model or another adapter type (LyCORIS LoHa/LoKr are not supported)?")
    family = family or lora_family(shapes, meta)
    if any("dora_scale" in k or "lora_magnitude_vector" in k for k in sd):
        raise LoraStudioError(f"{path}: DoRA adapters are not supported yet.", "use a plain LoRA.")
    if fmt == "kohya":
        if family == "sdxl" and unet_config is None and any("input_blocks" in k or "output_blocks" in k for k in sd):
            unet_config = default_unet_config("sdxl")
        kwargs = {"unet_config": unet_config} if unet_config is not None else {}
        try:
            converted, network_alphas = _pipeline_class(family).lora_state_dict(dict(sd), **kwargs)
        except LoraStudioError:
            raise
        except Exception as exc:
            raise LoraStudioError(f"{path}: diffusers could not read this kohya LoRA: {str(exc).splitlines()[0][:200]}",
                                  "it may use layer types (LoHa, LoKr, conv) this version does not read.") from None
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


def canonical_name(name: str) -> str:
    """'unet.<module>' / 'text_encoder[_2].text_model.<module>' whatever the file's naming era."""
    name = name.removeprefix("base_model.model.")
    comp, _, module = name.partition(".")
    if comp not in COMPONENTS:
        return "unet." + name  # old diffusers files: UNet keys had no prefix
    if comp != "unet":
        module = _with_text_model(module)
    return f"{comp}.{module}"


def _float(value) -> float | None:
    try:
        return float(value) if value not in (None, "", "None") else None
    except (TypeError, ValueError):
        return None


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


# ----------------------------------------------------------------------------- kohya naming

def _with_text_model(module: str) -> str:
    # transformers >= 5.6 flattened CLIPTextModel; kohya names keep the `text_model.` level.
    return module if module.startswith(("text_model.", "text_projection")) else "text_model." + module


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
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and ".lora_" not in mod_name \
                    and not mod_name.endswith("base_layer"):
                name = f"{comp}.{mod_name}"
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
                 dtype=None) -> Path:
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
    if alpha is not None:
        ranks = {m.rank for m in src.modules.values()}
        for m in src.modules.values():
            m.alpha = float(alpha) if len(ranks) == 1 else m.alpha
    lora = LoraFile(src.path, "kohya", family, src.modules, meta)
    if tag_frequency is None and meta.get("lora_studio.tag_frequency"):
        tag_frequency = json.loads(meta["lora_studio.tag_frequency"])
    return write_kohya(lora, out_path, unet_config=unet_config, tag_frequency=tag_frequency,
                       title=title or Path(out_path).stem, dtype=dtype)


def write_kohya(lora: LoraFile, out_path, unet_config=None, tag_frequency: dict | None = None,
                title: str | None = None, dtype=None, extra_metadata: dict | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    from lora_studio.core.io import write_with

    family = lora.family
    tensors = {}
    for name, m in lora.modules.items():
        k = kohya_name(name, family, unet_config)
        down, up = m.down, m.up
        if dtype is not None:
            down, up = down.to(dtype), up.to(dtype)
        tensors[k + ".lora_down.weight"] = down.detach().cpu().contiguous()
        tensors[k + ".lora_up.weight"] = up.detach().cpu().contiguous()
        tensors[k + ".alpha"] = torch.tensor(float(m.alpha), dtype=torch.float32)
    ranks, alphas = lora.ranks, lora.alphas
    meta = {
        "ss_base_model_version": BASE_MODEL_VERSION[family],
        "ss_v2": str(family == "sd2"),
        "ss_network_module": "networks.lora",
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


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def peft_state_dict(lora: LoraFile, weight: float = 1.0) -> dict:
    """``{comp.module.lora_A/B.weight}`` with scale * weight folded into B: what ``load_lora_weights`` takes as a dict.

    Passing this (rather than the raw file) sidesteps files that mix naming eras, which diffusers' loader
    reads only partly (``convert_state_dict_to_diffusers`` output mixes ``lora.down`` and ``lora_A``).
    """
    out = {}
    for name, m in lora.modules.items():
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


# ----------------------------------------------------------------------------- inspect

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
    for key, shape in shapes.items():
        split = _split_pair_key(key)
        if split is None:
            continue
        name, part = split
        if part == "down":
            ranks.add(int(shape[0]))
        comp = ("unet" if name.startswith(("lora_unet_", "unet.")) else
                "text_encoder_2" if name.startswith(("lora_te2_", "text_encoder_2.")) else "text_encoder")
        comps[comp] = comps.get(comp, 0) + (part == "down")
        flat = name.replace(".", "_")
        leaf = next((t for t in _KNOWN_TARGETS if flat.endswith("_" + t.replace(".", "_"))), flat.rsplit("_", 1)[-1])
        targets.add(leaf)
    alphas = sorted({_float(meta.get("ss_network_alpha"))} - {None})
    peft = _peft_alphas(meta)
    alphas = sorted(set(alphas) | {float(v["lora_alpha"]) for v in peft.values() if "lora_alpha" in v})
    if fmt == "kohya":
        alphas = sorted(set(alphas) | {float(v) for v in _kohya_alpha_values(path, shapes)})
    elif not alphas and meta.get("lora_studio.alpha"):
        alphas = [float(meta["lora_studio.alpha"])]
    return {"file": str(path), "kind": "lora", "format": fmt, "family": family,
            "family_name": family_name(family) if family else "unknown", "ranks": sorted(ranks),
            "alphas": alphas, "layers": comps, "target_modules": sorted(targets),
            "cross_attention_width": cross_attention_width(shapes),
            "metadata": {k: v for k, v in meta.items() if k != "lora_adapter_metadata"}}


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


# ----------------------------------------------------------------------------- the architecture guard

def check_fits(path, pipe) -> dict[str, tuple[int, ...]]:
    """Refuse a LoRA made for another family or text-encoder width, from its header, before loading it.

    Returns the header shapes. Raises LoraStudioError naming the LoRA's family and the model's.
    """
    path = Path(path)
    shapes, meta = _header(path)
    fmt = file_format(shapes)
    if fmt == "unknown":
        raise LoraStudioError(f"{path}: no LoRA weights found.", "pick a LoRA .safetensors file.")
    model_family = pipeline_family(pipe)
    lora_fam = lora_family(shapes, meta)
    model_desc = f"{family_name(model_family)} (text width {pipe.unet.config.cross_attention_dim})"
    if lora_fam and lora_fam != model_family:
        raise LoraStudioError(
            f"{path.name} is a LoRA for {family_name(lora_fam)}; the loaded model is {family_name(model_family)}.",
            f"load a {family_name(lora_fam)} base model to use this LoRA, or pick a LoRA trained for "
            f"{family_name(model_family)}.")
    problems = _shape_problems(shapes, fmt, pipe)
    if problems:
        width = cross_attention_width(shapes)
        sdxl_style = any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.", "lora_unet_input_blocks",
                                       "lora_unet_output_blocks")) for k in shapes)
        lora_desc = family_name(lora_fam) if lora_fam else (
            family_name(CROSS_WIDTH_FAMILY[width]) if width in CROSS_WIDTH_FAMILY else
            family_name("sdxl") if sdxl_style else "SD 1.x / 2.x")
        if width:
            lora_desc += f" (text width {width})"
        raise LoraStudioError(
            f"{path.name} does not fit this model: it was made for {lora_desc}; the loaded model is {model_desc}. "
            f"{len(problems)} layer(s) differ, e.g. {problems[0]}.",
            "use the base model the LoRA was trained on (same family and text encoder).")
    return shapes


def _shape_problems(shapes, fmt: str, pipe) -> list[str]:
    modules = {}
    if fmt == "kohya":
        kmap = kohya_module_map(pipe)
        lookup = lambda base: kmap.get(base, (None, None))[1]  # noqa: E731
    else:
        def lookup(base):
            comp, _, name = base.removeprefix("base_model.model.").partition(".")
            if comp not in COMPONENTS:
                comp, name = "unet", base
            model = getattr(pipe, comp, None)
            if model is None:
                return None
            if modules.get(comp) is None:
                modules[comp] = dict(model.named_modules())
            mod = modules[comp].get(name)
            if mod is None and name.startswith("text_model."):
                mod = modules[comp].get(name[len("text_model."):])
            elif mod is None:
                mod = modules[comp].get("text_model." + name)
            return getattr(mod, "base_layer", mod)
    problems = []
    for key, shape in shapes.items():
        split = _split_pair_key(key)
        if split is None:
            continue
        base, part = split
        mod = lookup(base)
        if mod is None or not hasattr(mod, "weight"):
            problems.append(f"{base}: no such layer in the model")
            continue
        w = tuple(mod.weight.shape)
        if part == "down" and len(shape) > 1 and shape[1] != w[1]:
            problems.append(f"{base}: LoRA input width {shape[1]}, model layer {w[1]}")
        elif part == "up" and shape[0] != w[0]:
            problems.append(f"{base}: LoRA output width {shape[0]}, model layer {w[0]}")
    return problems
