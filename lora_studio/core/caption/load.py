"""``--model M`` -> a captioner: ``demo``, a local folder, or a Hugging Face repo id fetched once and cached."""

from __future__ import annotations

import os
from pathlib import Path

from lora_studio.core.caption.base import Captioner
from lora_studio.errors import LoraStudioError

# What a captioning repo needs; a repo's other files (other weight formats, examples) are not fetched.
HUB_FILES = ["*.json", "*.txt", "*.model", "*.safetensors", "*.onnx", "*.csv", "*.tiktoken"]
_ADVICE = ("give `demo`, a local folder (a transformers image-to-text model, or a tagger folder with "
           "model.onnx and selected_tags.csv), or a Hugging Face repo id such as "
           "Salesforce/blip-image-captioning-large or SmilingWolf/wd-vit-tagger-v3.")


def kind_of(folder: Path) -> str:
    """"tagger" or "image-to-text", from the files the folder holds."""
    from lora_studio.core.caption.tagger import MODEL_FILE, TAGS_FILE

    if (folder / MODEL_FILE).is_file() and (folder / TAGS_FILE).is_file():
        return "tagger"
    if (folder / "config.json").is_file():
        return "image-to-text"
    raise LoraStudioError(f"{folder} holds no captioning model (no config.json, no {MODEL_FILE} + {TAGS_FILE}).",
                          _ADVICE)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch(repo_id: str, offline: bool | None = None, cache_dir: str | None = None) -> Path:
    """The repo's files in the Hugging Face cache: from the cache when there, else downloaded once."""
    from huggingface_hub import snapshot_download

    offline = _offline() if offline is None else offline
    try:
        path = snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True, cache_dir=cache_dir)
        return Path(path)
    except Exception:  # noqa: BLE001 - not in the cache: fetched below, or explained when offline
        if offline:
            raise LoraStudioError(f"the captioning model {repo_id} is not in the Hugging Face cache, and this "
                                  "machine is offline (HF_HUB_OFFLINE is set).",
                                  "connect to the internet once (it is cached for later), or download the model "
                                  "folder on another machine and give --model FOLDER.") from None
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, cache_dir=cache_dir))
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.onnx")):
            path = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES + ["*.bin"], cache_dir=cache_dir))
        return path
    except Exception as exc:  # noqa: BLE001 - network, auth and missing repos all end here
        raise LoraStudioError(f"the captioning model {repo_id} could not be downloaded: {exc}",
                              "check the name and the internet connection, or download the model folder and "
                              "give --model FOLDER.") from exc


def load_captioner(model: str, *, general_threshold: float = 0.35, character_threshold: float = 0.85,
                   device: str | None = None, prompt: str | None = None, offline: bool | None = None) -> Captioner:
    model = str(model).strip()
    if not model:
        raise LoraStudioError("no captioning model given.", _ADVICE)
    if model == "demo":
        from lora_studio.core.caption.demo import DemoCaptioner

        return DemoCaptioner()
    path = Path(model).expanduser()
    if not path.exists():
        if model.count("/") != 1 or model.startswith((".", "/", "~")) or os.sep in model.replace("/", ""):
            raise LoraStudioError(f"the captioning model {model} does not exist.", _ADVICE)
        path = fetch(model, offline)
    if path.is_file() and path.suffix == ".onnx":
        path = path.parent
    if not path.is_dir():
        raise LoraStudioError(f"{path} is not a model folder.", _ADVICE)
    if kind_of(path) == "tagger":
        from lora_studio.core.caption.tagger import OnnxTagger

        return OnnxTagger(path, general_threshold=general_threshold, character_threshold=character_threshold)
    from lora_studio.core.caption.image_to_text import ImageToTextCaptioner

    return ImageToTextCaptioner(path, device=device, prompt=prompt)
