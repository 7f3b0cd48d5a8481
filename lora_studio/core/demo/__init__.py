"""The demo world: a procedural renderer, tiny SD1.x / SDXL pipelines trained on it, and a judge.

The app's embedded default. Real checkpoints go through the same code; only the size differs.
"""

from __future__ import annotations

from pathlib import Path

from lora_studio.errors import LoraStudioError
from lora_studio.paths import resource

DEMO_MODELS = {"demo": "sd1", "demo-xl": "sdxl"}


def demo_model_path(name: str = "demo") -> Path:
    if name not in DEMO_MODELS:
        raise LoraStudioError(f"unknown demo model {name!r}", f"use one of: {', '.join(DEMO_MODELS)}.")
    return resource("models", name)


def demo_dataset_path(name: str = "subject") -> Path:
    if name not in ("subject", "style"):
        raise LoraStudioError(f"unknown demo dataset {name!r}", "use 'subject' or 'style'.")
    return resource("datasets", f"demo-{name}")
