"""A base model's family and native picture size, read from its configs or header: no weights, no torch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lora_studio.core.models.loader import PICKLE_SUFFIXES, ModelRef, resolve_model

# what the released checkpoints of each family were trained at
FAMILY_RESOLUTION = {"sd1": 512, "sd2": 512, "sdxl": 1024}
SD2_V_RESOLUTION = 768


@dataclass(frozen=True)
class ModelFacts:
    family: str  # "sd1" | "sd2" | "sdxl"
    resolution: int  # native size in pixels


def _folder_configs(ref: ModelRef) -> tuple[dict, dict] | None:
    """(vae config, unet config) of a folder model, or None for single files (their family decides)."""
    if ref.kind == "single_file":
        return None
    try:
        return tuple(json.loads((ref.path / sub / "config.json").read_text(encoding="utf-8"))
                     for sub in ("vae", "unet"))
    except (OSError, ValueError):
        return None


def native_resolution(ref: ModelRef) -> int:
    """UNet sample size x VAE scale factor where configs are at hand (the demo models: 64), else the family's."""
    cfgs = _folder_configs(ref)
    try:
        vae, unet = cfgs
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (TypeError, ValueError, KeyError):
        pass
    if ref.family == "sd2" and ref.variant == "v":
        return SD2_V_RESOLUTION
    return FAMILY_RESOLUTION.get(ref.family, 512)


def size_multiple(ref: ModelRef) -> int:
    """Picture sides must be multiples of this: the VAE's downscale times the UNet's (SD 1.x 64, SDXL 32)."""
    cfgs = _folder_configs(ref)
    try:
        vae, unet = cfgs
        return 2 ** (len(vae["block_out_channels"]) - 1) * 2 ** (len(unet["block_out_channels"]) - 1)
    except (TypeError, KeyError):
        return 32 if ref.family == "sdxl" else 64


def model_facts(name_or_path: str) -> ModelFacts | None:
    """Family and native size, or None for a pickled checkpoint (reading it needs torch: training detects it)."""
    if Path(str(name_or_path)).suffix.lower() in PICKLE_SUFFIXES:
        return None
    ref = resolve_model(name_or_path)
    return ModelFacts(ref.family, native_resolution(ref))
