"""What a run trained, as the kohya ``ss_*`` / ``modelspec.*`` metadata LoRA managers and webuis show.

ComfyUI-Lora-Manager and the Civitai helpers read trigger words from ``modelspec.trigger_phrase`` and
``ss_tag_frequency``, the picture count from ``ss_num_train_images``; A1111's metadata panel shows them all.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from concurrent.futures import Future
from pathlib import Path

HASH_CHUNK = 1 << 20


def caption_tags(caption: str) -> list[str]:
    """kohya counts comma-separated tags; a plain sentence (no comma) counts its words, so a caption like
    'a photo of sks dog' still names its trigger word instead of counting as one long tag."""
    parts = caption.split(",") if "," in caption else caption.split()
    return [t.strip() for t in parts if t.strip()]


def tag_frequency(examples) -> dict[str, dict[str, int]]:
    """``{caption folder name: {tag: pictures}}`` over the run's examples, each picture once (as kohya:
    repeats do not multiply the counts). ``examples`` have ``.path`` and ``.caption``."""
    seen, out = set(), {}
    for ex in examples:
        if ex.path in seen:
            continue
        seen.add(ex.path)
        out.setdefault(Path(ex.path).parent.name, Counter()).update(caption_tags(ex.caption))
    return {folder: dict(counts) for folder, counts in out.items()}


def trigger_phrase(config) -> str:
    """What a user types to call the LoRA up: the DreamBooth instance prompt (it holds the rare token), else
    the caption prefix a style run put before every caption; '' when the run had neither."""
    if config.mode == "dreambooth":
        return config.instance_prompt.strip()
    return config.caption_prefix.strip(" ,")


def _file_hashes(path: Path) -> tuple[str, str]:
    """(sha256 of the file, A1111's legacy 8-digit hash: sha256 of 64 KiB at 1 MiB), as kohya records them."""
    full = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            full.update(chunk)
        fh.seek(0x100000)
        legacy = hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]
    return full.hexdigest(), legacy


def base_model_facts(model: str) -> dict[str, str]:
    """Base model name and hashes (of the single file, or of a diffusers folder's UNet weights)."""
    from lora_studio.core.models.loader import resolve_model

    ref = resolve_model(model)
    target = ref.path
    if target is not None and Path(target).is_dir():
        unet = sorted(Path(target, "unet").glob("*.safetensors")) or sorted(Path(target, "unet").glob("*.bin"))
        target = unet[0] if unet else None
    facts = {"ss_sd_model_name": Path(str(model)).name if ref.kind != "demo" else str(model)}
    if target is not None and Path(target).is_file():
        facts["ss_new_sd_model_hash"], facts["ss_sd_model_hash"] = _file_hashes(Path(target))
    return facts


def base_model_facts_later(model: str) -> Future:
    """``base_model_facts(model)`` in a daemon thread (hashlib releases the GIL while it hashes): a run starts it
    once the model is loaded, so the sha256 of a multi-GB UNet overlaps training instead of delaying the save,
    and a run that fails early does not wait for it."""
    future: Future = Future()

    def work():
        try:
            future.set_result(base_model_facts(model))
        except BaseException as exc:  # handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=work, name="base-model-hash", daemon=True).start()
    return future


def training_metadata(config, examples, *, steps: int, started_at: float, finished_at: float,
                      base_facts: dict[str, str] | None = None) -> dict[str, str]:
    """The metadata of a trained LoRA, from the run's config and the examples it trained on; ``base_facts``:
    ``base_model_facts`` of the base model where the caller has them already."""
    res = int(config.resolution)
    trigger = trigger_phrase(config)
    meta = {
        "ss_tag_frequency": json.dumps(tag_frequency(examples), sort_keys=True),
        "ss_num_train_images": str(len(examples)),  # kohya's count: pictures x repeats
        "ss_resolution": f"({res}, {res})",
        "ss_training_started_at": repr(float(started_at)),
        "ss_training_finished_at": repr(float(finished_at)),
        "ss_steps": str(int(steps)),
        "ss_max_train_steps": str(int(config.max_train_steps)),
        "ss_seed": str(int(config.seed)),
        "ss_learning_rate": repr(float(config.learning_rate)),
        "ss_text_encoder_lr": repr(float(config.text_encoder_lr)) if config.train_text_encoder else "0",
        "ss_mixed_precision": config.mixed_precision,
        "ss_enable_bucket": str(bool(config.enable_bucket)),
        "modelspec.resolution": f"{res}x{res}",
        **(base_facts if base_facts is not None else base_model_facts(config.pretrained_model_name_or_path)),
    }
    if trigger:
        meta["modelspec.trigger_phrase"] = trigger
        meta["lora_studio.trigger"] = trigger
    return meta


def lora_trigger_phrase(path) -> str:
    """The trigger phrase a LoRA file records ('' if none): what the Preview tab offers when it is added."""
    from lora_studio.core.lora_files.forms import _header

    _, meta = _header(Path(path))
    for key in ("modelspec.trigger_phrase", "lora_studio.trigger", "lora_studio.instance_prompt"):
        if meta.get(key, "").strip():
            return meta[key].strip()
    return ""
