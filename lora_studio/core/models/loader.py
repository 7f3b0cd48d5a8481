"""Find a base model, tell its family from its files, load it as a diffusers pipeline.

A model is a diffusers folder, a single-file checkpoint (``.safetensors``; ``.ckpt``/``.pt``/``.bin``
only through ``torch.load(weights_only=True)``) or a bundled demo name. Families are told apart from
configs (folders) or from key names and tensor shapes read from the file header (single files), so
detection never loads the weights. Single files load with no network: their configs ship under
``resources/configs``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lora_studio.errors import LoraStudioError

FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
DEMO_NAMES = ("demo", "demo-xl")


@dataclass(frozen=True)
class ModelRef:
    path: Path
    kind: str  # "diffusers" | "single_file" | "demo"
    family: str  # "sd1" | "sd2" | "sdxl"
    variant: str = "base"  # "base" | "inpaint" | "v" (SD 2.x v-prediction)
    name: str = ""

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES.get(self.family, self.family)


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(family, family)


# ----------------------------------------------------------------------------- reading headers

def corrupted(path: Path, detail: str = "") -> LoraStudioError:
    return LoraStudioError(
        f"{path}: file is incomplete or corrupted{f' ({detail})' if detail else ''}.",
        "download or copy it again; a partial download or a full disk leaves files like this.")


def read_header(path: str | os.PathLike) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Key -> shape and the metadata of a checkpoint, without loading the tensors.

    ``.safetensors`` is read from its header; pickled files are opened with
    ``torch.load(weights_only=True, mmap=True)`` so nothing executable runs and tensors stay on disk.
    """
    path = Path(path)
    if not path.is_file():
        raise LoraStudioError(f"{path}: no such file.", "check the path.")
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        return _read_safetensors_header(path)
    if suffix in PICKLE_SUFFIXES:
        sd = load_pickled_state_dict(path, mmap=True)
        return {k: tuple(v.shape) for k, v in sd.items() if hasattr(v, "shape")}, {}
    raise LoraStudioError(f"{path}: unknown file type {suffix!r}.",
                          "use a .safetensors file (or .ckpt/.pt/.bin).")


def _read_safetensors_header(path: Path):
    from safetensors import safe_open

    size = path.stat().st_size
    if size < 8:
        raise corrupted(path, f"{size} bytes")
    with open(path, "rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        if header_len <= 0 or 8 + header_len > size:
            raise corrupted(path, "header runs past the end of the file")
        try:
            header = json.loads(fh.read(header_len))
        except (ValueError, UnicodeDecodeError):
            raise corrupted(path, "unreadable header") from None
    metadata = header.pop("__metadata__", None) or {}
    end = 0
    shapes = {}
    try:
        for key, info in header.items():
            shapes[key] = tuple(info["shape"])
            end = max(end, int(info["data_offsets"][1]))
    except (KeyError, TypeError, ValueError, IndexError):
        raise corrupted(path, "malformed header") from None
    if 8 + header_len + end > size:
        raise corrupted(path, f"{size} bytes, header says {8 + header_len + end}")
    try:  # let safetensors validate the rest of the header the same way it will on load
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise corrupted(path, str(exc).splitlines()[0][:120]) from None
    return shapes, {str(k): str(v) for k, v in metadata.items()}


def load_pickled_state_dict(path: str | os.PathLike, mmap: bool = False) -> dict:
    """A ``.ckpt``/``.pt``/``.bin`` state dict, unpickled with ``weights_only=True`` or refused."""
    import pickle

    import torch

    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise LoraStudioError(
            f"{path}: refused to load: the file holds Python objects beyond tensors ({str(exc).splitlines()[0][:160]}).",
            "pickled files can run code when opened; convert it to .safetensors with a tool you trust, "
            "or get the .safetensors version of the model.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        if mmap:  # old (non-zip) pickles cannot be memory-mapped
            return load_pickled_state_dict(path, mmap=False)
        raise corrupted(path, str(exc).splitlines()[0][:120]) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise LoraStudioError(f"{path}: not a state dict (found {type(obj).__name__}).",
                              "use a checkpoint or LoRA file saved as a state dict.")
    return obj


# ----------------------------------------------------------------------------- detection

_NOT_SUPPORTED = [  # (key fragment, architecture name)
    ("joint_blocks.0.context_block", "Stable Diffusion 3"),
    ("double_blocks.0.img_attn", "Flux"),
    ("transformer_blocks.0.ff_context", "Stable Diffusion 3 / Flux (diffusers layout)"),
    ("down_blocks.0.downsamplers", None),  # resolved below: diffusers-layout UNet file
    ("adaLN_modulation", "a DiT model (PixArt / SD3 / Flux family)"),
    ("stage_c", "Stable Cascade"),
    ("lora_unet_", "a LoRA"),
    ("lora_te", "a LoRA"),
    (".lora_A.", "a LoRA"),
    (".lora_down.", "a LoRA"),
]


def detect_family_from_keys(shapes: dict[str, tuple[int, ...]], source: str = "file") -> tuple[str, str]:
    """(family, variant) of an original-layout (LDM/SGM) checkpoint from its key names and shapes."""
    keys = shapes.keys()

    def has(fragment: str) -> bool:
        return any(fragment in k for k in keys)

    unet_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if unet_in is not None:
        variant = "inpaint" if len(unet_in) == 4 and unet_in[1] == 9 else "base"
        if len(unet_in) == 4 and unet_in[1] not in (4, 9):
            raise not_supported(source, f"a UNet with {unet_in[1]} input channels (e.g. instruct-pix2pix / depth)")
        if "conditioner.embedders.1.model.ln_final.weight" in shapes:
            return "sdxl", variant
        if "conditioner.embedders.0.model.ln_final.weight" in shapes:
            raise not_supported(source, "the SDXL refiner")
        if "cond_stage_model.model.ln_final.weight" in shapes:
            return "sd2", "v" if variant == "base" else variant
        if has("cond_stage_model.transformer."):
            return "sd1", variant
        ctx = shapes.get("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
        if ctx is not None and ctx[-1] == 768:
            return "sd1", variant
        raise not_supported(source, "a UNet without a text encoder this app knows")
    for fragment, arch in _NOT_SUPPORTED:
        if has(fragment):
            if arch is None:
                arch = "a lone diffusers UNet (not a full checkpoint)"
            raise not_supported(source, arch)
    raise not_supported(source, "an unknown architecture")


def not_supported(source, arch: str) -> LoraStudioError:
    return LoraStudioError(
        f"{source}: {arch} is not supported yet.",
        "LoRA Studio loads Stable Diffusion 1.x, 2.x and SDXL checkpoints (a single .safetensors file, "
        "a diffusers folder, or 'demo' / 'demo-xl').")


def _folder_family(folder: Path) -> tuple[str, str]:
    index = folder / "model_index.json"
    if not index.is_file():
        missing = "model_index.json"
        raise LoraStudioError(
            f"{folder}: not a diffusers pipeline folder ({missing} is missing).",
            "point at the folder that holds model_index.json, unet/, vae/, text_encoder/ and tokenizer/, "
            "or at a single .safetensors checkpoint.")
    try:
        info = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise corrupted(index, str(exc)[:120]) from None
    cls = str(info.get("_class_name", ""))
    missing = [name for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
               if name in info and info[name] and info[name][0] is not None and not (folder / name).is_dir()]
    if "unet" not in info:
        raise not_supported(folder, cls or "a pipeline without a UNet")
    if missing:
        raise LoraStudioError(f"{folder}: diffusers folder is missing {', '.join(s + '/' for s in missing)}.",
                              "copy the whole model folder (every subfolder listed in model_index.json).")
    unet_cfg_path = folder / "unet" / "config.json"
    if not unet_cfg_path.is_file():
        raise LoraStudioError(f"{folder}: unet/config.json is missing.", "copy the whole model folder.")
    unet_cfg = json.loads(unet_cfg_path.read_text(encoding="utf-8"))
    variant = "inpaint" if unet_cfg.get("in_channels") == 9 or "Inpaint" in cls else "base"
    if cls.startswith("StableDiffusionXL") or "text_encoder_2" in info:
        if not info.get("text_encoder") or info["text_encoder"][0] is None:
            raise not_supported(folder, "the SDXL refiner")
        return "sdxl", variant
    if cls.startswith("StableDiffusion") and "3" not in cls:
        if unet_cfg.get("in_channels") not in (4, 9):
            raise not_supported(folder, f"{cls} with {unet_cfg.get('in_channels')} input channels")
        if unet_cfg.get("cross_attention_dim") == 1024:
            sched = folder / "scheduler" / "scheduler_config.json"
            pred = json.loads(sched.read_text()).get("prediction_type", "epsilon") if sched.is_file() else "epsilon"
            return "sd2", "v" if pred == "v_prediction" and variant == "base" else variant
        return "sd1", variant
    raise not_supported(folder, cls or "this pipeline")


def detect_family(path: str | os.PathLike) -> str:
    """'sd1', 'sd2' or 'sdxl' for a diffusers folder or a single-file checkpoint."""
    return resolve_model(path).family


def resolve_model(name_or_path: str | os.PathLike) -> ModelRef:
    name = str(name_or_path)
    if name in DEMO_NAMES:
        from lora_studio.core.demo import DEMO_MODELS, demo_model_path

        return ModelRef(demo_model_path(name), "demo", DEMO_MODELS[name], "base", name)
    path = Path(name).expanduser()
    if path.is_dir():
        family, variant = _folder_family(path)
        return ModelRef(path, "diffusers", family, variant, path.name)
    if path.is_file():
        shapes, metadata = read_header(path)
        embedded = metadata.get(EMBEDDED_CONFIG_KEY)
        family, variant = detect_family_from_keys(shapes, str(path))
        if embedded:  # written by our own single-file saver: trust its recorded family
            family = json.loads(embedded).get("family", family)
        return ModelRef(path, "single_file", family, variant, path.stem)
    raise LoraStudioError(f"{name}: no such model file or folder.",
                          "give a diffusers folder, a .safetensors checkpoint, 'demo' or 'demo-xl'.")


# ----------------------------------------------------------------------------- loading

EMBEDDED_CONFIG_KEY = "lora_studio.diffusers_config"


def pipeline_class(family: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def load_pipeline(name_or_path, torch_dtype=None, device: str = "cpu", config: str | os.PathLike | None = None):
    """A StableDiffusionPipeline / StableDiffusionXLPipeline (safety checker off), weights in ``torch_dtype``.

    ``config``: for a single file, a diffusers config folder to use instead of the embedded / bundled one.
    """
    import torch

    torch_dtype = torch_dtype or torch.float32
    ref = name_or_path if isinstance(name_or_path, ModelRef) else resolve_model(name_or_path)
    if ref.variant == "inpaint":
        raise LoraStudioError(
            f"{ref.path}: an inpainting {ref.family_name} model is not supported for training or preview yet.",
            "use the base (non-inpainting) model; LoRAs trained on it also load on its inpainting variant "
            "in other apps.")
    if ref.kind == "demo":
        pipe = _load_demo(ref, torch_dtype)
    elif ref.kind == "diffusers":
        pipe = _load_folder(ref, torch_dtype)
    else:
        pipe = _load_single_file(ref, torch_dtype, config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _quiet():
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()


def _load_demo(ref: ModelRef, torch_dtype):
    if (ref.path / "model_index.json").is_file():
        return _load_folder(ref, torch_dtype)
    # The trained demo weights are not built yet in this checkout: use the same architecture at random init,
    # so everything downstream runs (images are noise-like until `resources/models/<name>` exists).
    import warnings

    from lora_studio.core.demo.build import build_pipeline

    warnings.warn(f"{ref.path} is not there yet; using the untrained {ref.name} architecture.", stacklevel=3)
    import torch

    pipe = build_pipeline(ref.family, seed=0)
    return pipe if torch_dtype == torch.float32 else pipe.to(dtype=torch_dtype)


def _load_folder(ref: ModelRef, torch_dtype):
    """``torch_dtype``: one precision, or diffusers' per-component form ``{"default": .., "vae": ..}``."""
    _quiet()
    cls = pipeline_class(ref.family)
    kwargs = dict(torch_dtype=torch_dtype, local_files_only=True)
    if ref.family != "sdxl":
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        return cls.from_pretrained(str(ref.path), **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise LoraStudioError(f"{ref.path}: could not load the diffusers folder: {str(exc).splitlines()[0][:300]}",
                              "check that every subfolder and weight file listed in model_index.json is there.") from None


def shipped_config_dir(family: str, variant: str = "base") -> Path:
    from lora_studio.paths import resource

    name = {("sd1", "base"): "sd1", ("sd2", "v"): "sd2-v", ("sd2", "base"): "sd2",
            ("sdxl", "base"): "sdxl"}.get((family, variant))
    folder = resource("configs", name) if name else None
    if folder is None or not (folder / "model_index.json").is_file():
        raise LoraStudioError(f"no bundled config for {family_name(family)} ({variant}).",
                              "reinstall LoRA Studio; resources/configs is incomplete.")
    return folder


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """The OpenAI CLIP BPE tokenizer (SD 1.x, SD 2.x and both SDXL encoders use it), from bundled files."""
    from transformers import CLIPTokenizer

    from lora_studio.paths import resource

    folder = resource("configs", "clip_tokenizer")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token,
                         model_max_length=77)


def _load_single_file(ref: ModelRef, torch_dtype, config=None):
    import tempfile

    _quiet()
    cls = pipeline_class(ref.family)
    _, metadata = read_header(ref.path)
    embedded = metadata.get(EMBEDDED_CONFIG_KEY)
    with tempfile.TemporaryDirectory() as tmp:
        if config is not None:
            config_dir, kwargs = Path(config), {}
        elif embedded:
            configs = json.loads(embedded)["configs"]
            config_dir = write_config_folder(configs, Path(tmp))
            kwargs = tokenizers_from_configs(configs)
        else:
            config_dir = shipped_config_dir(ref.family, ref.variant)
            pad = "!" if ref.family == "sd2" else "<|endoftext|>"
            kwargs = {"tokenizer": clip_tokenizer(pad)}
            if ref.family == "sdxl":
                kwargs["tokenizer_2"] = clip_tokenizer("!")
        if ref.family != "sdxl":
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        if ref.path.suffix.lower() in PICKLE_SUFFIXES:
            load_pickled_state_dict(ref.path, mmap=True)  # refuses unsafe pickles before diffusers opens it
        try:
            pipe = cls.from_single_file(str(ref.path), config=str(config_dir), local_files_only=True,
                                        torch_dtype=torch_dtype, **kwargs)
        except LoraStudioError:
            raise
        except Exception as exc:  # diffusers raises ValueError/RuntimeError/KeyError on layout mismatch
            raise LoraStudioError(
                f"{ref.path}: could not load as a {ref.family_name} checkpoint: {str(exc).splitlines()[0][:300]}",
                "the file's layout does not match its detected family; it may be a merge with missing parts.") from None
    return pipe


BUNDLED_CLIP_MARKER = "bundled-openai-clip-pad"


def _is_openai_clip_tokenizer(tok) -> bool:
    return len(tok) == 49408 and tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def tokenizers_from_configs(configs: dict) -> dict:
    """Tokenizer objects for components the embedded configs mark as the bundled OpenAI CLIP tokenizer."""
    return {rel.split("/")[0]: clip_tokenizer(pad) for rel, pad in configs.items()
            if rel.endswith("/" + BUNDLED_CLIP_MARKER)}


def write_config_folder(configs: dict[str, dict], folder: Path) -> Path:
    """Write {'model_index.json': {...}, 'unet/config.json': {...}, 'tokenizer/vocab.json': ...}."""
    for rel, content in configs.items():
        if rel.endswith("/" + BUNDLED_CLIP_MARKER):
            continue
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content, indent=2)
        target.write_text(text, encoding="utf-8")
    return folder


def pipeline_configs(pipe) -> dict[str, object]:
    """Every config a pipeline needs to be rebuilt from a single file: model_index, components, tokenizers."""
    import tempfile

    configs: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_config(tmp)
        configs["model_index.json"] = json.loads(Path(tmp, "model_index.json").read_text())
        for name, comp in pipe.components.items():
            if comp is None:
                continue
            sub = Path(tmp, name)
            if hasattr(comp, "save_pretrained") and not hasattr(comp, "parameters"):  # tokenizers
                if _is_openai_clip_tokenizer(comp):  # rebuilt from the bundled files: no 3.6 MB copy in the header
                    configs[f"{name}/{BUNDLED_CLIP_MARKER}"] = str(comp.pad_token)
                    continue
                comp.save_pretrained(str(sub))
            elif hasattr(comp, "save_config"):  # schedulers, diffusers models
                comp.save_config(str(sub))
            elif hasattr(comp, "config") and hasattr(comp.config, "to_json_file"):  # transformers models
                sub.mkdir(parents=True, exist_ok=True)
                comp.config.to_json_file(str(sub / "config.json"))
            if sub.is_dir():
                for f in sub.iterdir():
                    if f.is_file():
                        configs[f"{name}/{f.name}"] = f.read_text(encoding="utf-8")
    return configs
