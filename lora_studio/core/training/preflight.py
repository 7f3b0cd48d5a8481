"""Checks that stop a run before any work, with a message that says what to do."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from lora_studio.config import ConfigError
from lora_studio.core.training.data import Example
from lora_studio.core.dataset import training_buckets
from lora_studio.errors import LoraStudioError

OPTIONAL_OPTIMIZERS = {"adamw8bit": ("bitsandbytes", "bitsandbytes"), "prodigy": ("prodigyopt", "prodigyopt")}


def check_config(config) -> None:
    try:
        config.validate()
    except ConfigError as exc:
        raise LoraStudioError(str(exc), f"fix '{exc.key}' in the config." if exc.key else "fix the config.") from None


def check_model(config):
    from lora_studio.core.models.loader import FAMILY_NAMES, resolve_model

    ref = resolve_model(config.pretrained_model_name_or_path)
    if ref.family not in ("sd1", "sd2", "sdxl"):
        raise LoraStudioError(f"{config.pretrained_model_name_or_path}: {ref.family} models cannot be trained.",
                              "use an SD 1.x or SDXL model.")
    wanted = config.model_family
    if wanted != "auto" and (wanted == "sdxl") != (ref.family == "sdxl"):
        raise LoraStudioError(
            f"model_family = \"{wanted}\", but {config.pretrained_model_name_or_path} is "
            f"{FAMILY_NAMES.get(ref.family, ref.family)}.", "set model_family = \"auto\" in the config.")
    if ref.variant == "inpaint":
        raise LoraStudioError(f"{ref.path}: inpainting models cannot be trained here.", "use the base model.")
    return ref


DEVICE_WORDS = {"cuda": "a CUDA GPU", "mps": "the Apple GPU (MPS)", "cpu": "the CPU"}


def resolve_precision(config, device: torch.device):
    """``mixed_precision = "auto"`` made concrete for ``device`` (``system.working_precision``)."""
    from lora_studio.core.system import working_precision

    return config.replace(mixed_precision=working_precision(device)) if config.mixed_precision == "auto" else config


def check_precision(config, device: torch.device) -> None:
    mp = config.mixed_precision
    if mp == "fp16" and device.type != "cuda":
        raise LoraStudioError(f"mixed_precision = \"fp16\" needs a CUDA GPU; this run is on "
                              f"{DEVICE_WORDS.get(device.type, device.type)}.",
                              "set mixed_precision = \"no\" (or \"bf16\") in the config.")
    if mp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LoraStudioError(f"mixed_precision = \"bf16\": {torch.cuda.get_device_name(device)} has no bf16 support.",
                              "set mixed_precision = \"fp16\" in the config (RTX 20 series and older, GTX cards).")


def check_device(config, device: torch.device) -> None:
    """What a run on Apple's MPS cannot do, said plainly before any work (the CUDA graph step is CUDA-only)."""
    if device.type != "mps":
        return
    if config.int8_base:
        raise LoraStudioError("int8_base = true needs a CUDA GPU; this run is on the Apple GPU (MPS).",
                              "set int8_base = false (use gradient_checkpointing = true and a smaller batch "
                              "to save memory instead).")
    if config.optimizer == "adamw8bit":
        raise LoraStudioError("optimizer = \"adamw8bit\" (bitsandbytes) needs a CUDA GPU; this run is on the "
                              "Apple GPU (MPS).", "set optimizer = \"adamw\".")


def check_optimizer(config) -> None:
    if config.optimizer in OPTIONAL_OPTIMIZERS:
        module, package = OPTIONAL_OPTIMIZERS[config.optimizer]
        if importlib.util.find_spec(module) is None:
            raise LoraStudioError(f"optimizer = \"{config.optimizer}\" needs the '{package}' package, which is "
                                  "not installed.",
                                  f"run `pip install {package}` (or `pip install lora-studio[extras]`), or set "
                                  "optimizer = \"adamw\".")


def check_instance_token(config) -> None:
    if config.mode != "dreambooth":
        return
    if config.with_prior_preservation:
        own = set(config.instance_prompt.lower().split()) - set(config.class_prompt.lower().split())
        if not own:
            raise LoraStudioError(
                f"instance_prompt '{config.instance_prompt}' has no token that class_prompt "
                f"'{config.class_prompt}' lacks: the subject has no name to learn.",
                "add a rare token for the subject, e.g. instance_prompt = \"a photo of sks dog\" with "
                "class_prompt = \"a photo of a dog\".")


def collect_examples(config) -> list[Example]:
    """The run's training examples (kohya folder repeats expanded), each with its bucket."""
    from lora_studio.core.dataset import ERROR, Dataset

    if not config.train_data_dir.strip():
        raise LoraStudioError("train_data_dir is empty.", "set train_data_dir to the folder of training images.")
    ds = Dataset.open(config.train_data_dir)
    if len(ds) == 0:
        raise LoraStudioError(f"{ds.root}: no images found (train_data_dir).",
                              "add .jpg/.png/.webp images to the folder, or point train_data_dir at the right one.")
    broken = [item for item in ds if any(p.severity == ERROR and p.category != "caption" for p in item.errors)
              or item.size is None]
    if broken:
        names = ", ".join(item.name for item in broken[:5]) + (" ..." if len(broken) > 5 else "")
        raise LoraStudioError(f"{len(broken)} image(s) in {ds.root} cannot be read: {names}.",
                              f"fix or remove them; `lora-studio dataset check {ds.root}` lists the problems.")
    if config.mode == "style":
        missing = ds.uncaptioned()
        if missing:
            names = ", ".join(item.name for item in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise LoraStudioError(
                f"{len(missing)} of {len(ds)} image(s) in {ds.root} have no caption: {names}.",
                "write a caption for each image (a .txt file beside it, or metadata.jsonl), or train a "
                "DreamBooth run (mode = \"dreambooth\") with an instance prompt.")
    buckets = training_buckets(config)
    examples = []
    for item in ds:
        caption = (config.caption_prefix + item.prompt) if config.mode == "style" else config.instance_prompt
        ex = Example(Path(item.path), caption, tuple(item.size), buckets.assign(item.size), item.name)
        examples += [ex] * max(1, item.repeats)
    return examples


def class_examples(paths: list[Path], config) -> list[Example]:
    from lora_studio.core.dataset import image_size

    buckets = training_buckets(config)
    res = config.resolution
    sizes = [tuple(image_size(Path(p)) or (res, res)) for p in paths]
    return [Example(Path(p), config.class_prompt, size, buckets.assign(size)) for p, size in zip(paths, sizes)]


def dataset_record(examples: list[Example], config) -> dict:
    """What `<output_dir>/dataset.json` holds: each picture's bucket and caption as trained."""
    buckets = training_buckets(config)
    assignments, captions = {}, {}
    for ex in examples:
        assignments[ex.name] = list(ex.bucket)
        captions[ex.name] = ex.caption
    return {"root": str(Path(config.train_data_dir).resolve()), "resolution": config.resolution,
            "step": buckets.step, "assignments": assignments, "captions": captions}


def check_trigger(config, emit):
    """Warn when captions lack the trigger word; returns the config to run, its validation prompt holding it."""
    from lora_studio.core.dataset import trigger
    from lora_studio.core.events import Warning

    found = trigger.check_config(config)
    if found is not None and found.count:
        emit(Warning(found.message()))
    prompt = trigger.validation_prompt(config)
    return config if prompt == config.validation_prompt else config.replace(validation_prompt=prompt)
