"""The architecture guard: refuse a LoRA made for another model before loading it."""

from __future__ import annotations

from pathlib import Path

from lora_studio.core.lora_files.forms import (COMPONENTS, CROSS_WIDTH_FAMILY, _header, _split_pair_key,
                                               cross_attention_width, family_name, file_format, lora_family)
from lora_studio.core.lora_files.kohya import kohya_module_map, pipeline_family
from lora_studio.errors import LoraStudioError

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
