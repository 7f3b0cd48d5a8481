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


def native_resolution(ref: ModelRef) -> int:
    """UNet sample size x VAE scale factor where configs are at hand (the demo models: 64), else the family's."""
    unet_cfg, vae_cfg = ref.path / "unet" / "config.json", ref.path / "vae" / "config.json"
    if ref.path.is_dir() and unet_cfg.is_file() and vae_cfg.is_file():
        try:
            sample = int(json.loads(unet_cfg.read_text(encoding="utf-8"))["sample_size"])
            levels = len(json.loads(vae_cfg.read_text(encoding="utf-8"))["block_out_channels"])
            return sample * 2 ** (levels - 1)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if ref.family == "sd2" and ref.variant == "v":
        return SD2_V_RESOLUTION
    return FAMILY_RESOLUTION.get(ref.family, 512)


def model_facts(name_or_path: str) -> ModelFacts | None:
    """Family and native size, or None for a pickled checkpoint (reading it needs torch: training detects it)."""
    if Path(str(name_or_path)).suffix.lower() in PICKLE_SUFFIXES:
        return None
    ref = resolve_model(name_or_path)
    return ModelFacts(ref.family, native_resolution(ref))
