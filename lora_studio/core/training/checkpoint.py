"""Resumable checkpoints: whole directories written atomically, the oldest pruned only afterwards.

Layout of ``<output_dir>/checkpoints/checkpoint-<step>/``:
  pytorch_lora_weights.safetensors   the adapter at that step (diffusers format, loads on its own)
  training_state.pt                  optimizer, LR scheduler, grad scaler, RNG states
  state.json                         {"step", "micro_step", "loss_history", "config"}
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from lora_studio.core.io import atomic_dir
from lora_studio.core.training.lora import ADAPTER_FILE, save_adapter

_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary/partial directories are hidden names, never matched)."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))
             and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def rng_states() -> dict:
    # numpy's state as plain lists, so the checkpoint loads with torch.load(weights_only=True): a shared
    # checkpoint folder is as untrusted as any download.
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir, step: int, micro_step: int, models, config, optimizer, lr_scheduler,
                    accelerator, loss_history: list, limit: int, ema=None) -> Path:
    final = checkpoints_dir(output_dir) / f"checkpoint-{step}"
    with atomic_dir(final) as tmp:
        save_adapter(tmp, models, config, extra={"step": step})
        scaler = getattr(accelerator, "scaler", None)
        torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_states(),
                    "ema": ema.state_dict() if ema is not None else None},
                   tmp / "training_state.pt")
        (tmp / "state.json").write_text(json.dumps({
            "step": step, "micro_step": micro_step, "loss_history": loss_history,
            "config": config.to_dict()}), encoding="utf-8")
    prune(output_dir, limit)
    return final


def prune(output_dir, limit: int) -> None:
    if limit <= 0:
        return
    found = list_checkpoints(output_dir)
    for old in found[: max(0, len(found) - limit)]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, models, config, optimizer, lr_scheduler, accelerator) -> dict:
    """Restore adapter weights, optimizer, scheduler, scaler and RNGs; return state.json's content (plus "ema",
    the weight average's state where the run kept one)."""
    from lora_studio.core.training.lora import load_adapter_weights

    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    load_adapter_weights(models, config, path / ADAPTER_FILE)
    blob = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    lr_scheduler.load_state_dict(blob["lr_scheduler"])
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and blob.get("scaler") is not None:
        scaler.load_state_dict(blob["scaler"])
    set_rng_states(blob["rng"])
    state["ema"] = blob.get("ema")
    return state
