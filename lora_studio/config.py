"""One typed, versioned training configuration, stored as TOML.

Key names follow the diffusers training scripts' flags so their users feel at home. Each field carries
its help text, bounds and choices in metadata: the GUI form and the TOML file read the same source.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from lora_studio.paths import runs_dir

SCHEMA_VERSION = 2
DEFAULT_RUN_NAME = "lora-output"


class ConfigError(ValueError):
    """A configuration problem; the message names the key and what to do."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def _f(default, help: str, *, group: str, min=None, max=None, choices=None, advanced=False, **kw):
    meta = {"help": help, "group": group, "min": min, "max": max, "choices": choices, "advanced": advanced}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def _default_report_to() -> str:
    # TensorBoard only where it is installed (an extra): otherwise every default run warned that it is missing.
    import importlib.util

    found = any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))
    return "tensorboard" if found else "none"


@dataclass
class TrainingConfig:
    schema_version: int = _f(SCHEMA_VERSION, "Version of this file's layout; written by LoRA Studio.", group="meta", min=1)

    # Model and data
    pretrained_model_name_or_path: str = _f(
        "demo", "Base model: a diffusers folder, a .safetensors/.ckpt file, or 'demo' / 'demo-xl'.", group="model")
    model_family: str = _f("auto", "Model family; 'auto' detects SD 1.x or SDXL from the model.", group="model",
                           choices=["auto", "sd1", "sdxl"])
    output_dir: str = _f(str(runs_dir() / DEFAULT_RUN_NAME), "Folder for the adapter, checkpoints, samples and logs "
                         "(default: LoRA Studio/runs in your documents folder). In a config file, a relative path "
                         "is relative to the config file's folder.", group="model")
    train_data_dir: str = _f("", "Folder of training images with captions (.txt sidecars or metadata.jsonl).", group="data")
    mode: str = _f("style", "'style': each image's own caption. 'dreambooth': every image is the subject, "
                   "described by the instance prompt.", group="data", choices=["style", "dreambooth"])
    instance_prompt: str = _f("", "DreamBooth prompt with a rare token for the subject, e.g. 'a photo of sks dog'.",
                              group="data")
    caption_prefix: str = _f("", "Text put before every caption (e.g. a trigger token).", group="data", advanced=True)
    trigger_word: str = _f("", "The word that calls up the LoRA (style runs): Start warns when captions lack it, and "
                           "it is put into the sample prompt.", group="data")
    repeats: int = _f(1, "How often each image is seen per epoch.", group="data", min=1, max=1000)
    resolution: int = _f(512, "Training resolution in pixels (512 for SD 1.5, 1024 for SDXL).", group="data",
                         min=32, max=4096)
    enable_bucket: bool = _f(True, "Train at several aspect ratios instead of cropping everything square.", group="data")
    bucket_no_upscale: bool = _f(False, "Never upscale small images to fill a bucket.", group="data", advanced=True)
    center_crop: bool = _f(False, "Crop the centre of the image instead of a random crop.", group="data")
    random_flip: bool = _f(False, "Mirror images at random (not for subjects with text or asymmetric features).",
                           group="data")

    # DreamBooth prior preservation
    with_prior_preservation: bool = _f(False, "Keep the class looking like itself by also training on class images.",
                                       group="dreambooth")
    class_prompt: str = _f("", "Prompt for the class images, e.g. 'a photo of a dog'.", group="dreambooth")
    class_data_dir: str = _f("", "Folder of class images; missing ones are generated with the base model.",
                             group="dreambooth")
    num_class_images: int = _f(100, "How many class images to use (generated if fewer exist).", group="dreambooth",
                               min=1, max=100000)
    prior_loss_weight: float = _f(1.0, "Weight of the class-image loss.", group="dreambooth", min=0.0, max=100.0)
    sample_batch_size: int = _f(4, "Batch size when generating class images.", group="dreambooth", min=1, max=64,
                                advanced=True)

    # LoRA
    rank: int = _f(16, "LoRA rank: capacity of the adapter. 4-32 is typical; larger files learn more detail.",
                   group="lora", min=1, max=1024)
    lora_alpha: float = _f(0.0, "LoRA alpha; the update is scaled by alpha / rank. 0 means 'same as rank'.",
                           group="lora", min=0.0, max=4096.0)
    lora_dropout: float = _f(0.0, "Dropout on the LoRA path.", group="lora", min=0.0, max=0.9, advanced=True)
    target_modules: list = _f(["to_k", "to_q", "to_v", "to_out.0"], "UNet modules that get LoRA layers.",
                              group="lora", advanced=True)
    network: str = _f("lora", "Adapter type. 'lora': low-rank pairs on the target modules; 'locon': LoRA on the "
                      "ResNet convolutions too; 'loha' / 'lokr': LyCORIS Hadamard / Kronecker layers (more detail per "
                      "parameter, saved in the LyCORIS layout A1111/Forge and ComfyUI read; slower, no fast path).",
                      group="lora", choices=["lora", "locon", "loha", "lokr"])
    train_text_encoder: bool = _f(False, "Also train LoRA on the text encoder(s) (both on SDXL).", group="lora")
    text_encoder_lr: float = _f(5e-6, "Learning rate of the text-encoder LoRA.", group="lora", min=0.0, max=1.0)

    # Optimisation
    learning_rate: float = _f(1e-4, "Learning rate of the UNet LoRA.", group="optim", min=0.0, max=1.0)
    optimizer: str = _f("adamw", "Optimizer. 'adamw8bit' needs bitsandbytes, 'prodigy' needs prodigyopt.",
                        group="optim", choices=["adamw", "adamw8bit", "prodigy"])
    lr_scheduler: str = _f("constant", "Learning-rate schedule.", group="optim",
                           choices=["constant", "constant_with_warmup", "linear", "cosine",
                                    "cosine_with_restarts", "polynomial"])
    lr_warmup_steps: int = _f(0, "Steps of linear warm-up.", group="optim", min=0, max=10_000_000)
    adam_beta1: float = _f(0.9, "Adam beta1.", group="optim", min=0.0, max=1.0, advanced=True)
    adam_beta2: float = _f(0.999, "Adam beta2.", group="optim", min=0.0, max=1.0, advanced=True)
    adam_weight_decay: float = _f(1e-2, "Weight decay.", group="optim", min=0.0, max=1.0, advanced=True)
    adam_epsilon: float = _f(1e-8, "Adam epsilon.", group="optim", min=0.0, max=1.0, advanced=True)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 = off).", group="optim", min=0.0, max=1e6)
    train_batch_size: int = _f(1, "Images per step per GPU. Lower it first when memory runs out.", group="optim",
                               min=1, max=1024)
    gradient_accumulation_steps: int = _f(1, "Steps whose gradients add up before one update: a larger batch "
                                          "without more memory.", group="optim", min=1, max=1024)
    max_train_steps: int = _f(500, "Optimizer updates to train for.", group="optim", min=1, max=10_000_000)
    seed: int = _f(42, "Random seed; the same seed gives the same adapter.", group="optim", min=0, max=2**32 - 1)
    noise_offset: float = _f(0.0, "Noise offset (0.05-0.1 helps very dark / bright images).", group="optim",
                             min=0.0, max=1.0, advanced=True)
    snr_gamma: float = _f(0.0, "Min-SNR weighting gamma (5 is usual; 0 = off).", group="optim", min=0.0, max=100.0,
                          advanced=True)
    preserve_unconditional: float = _f(
        0.0, "Weight of a loss that keeps the empty-prompt prediction equal to the base model's on the training "
        "images, so the LoRA's effect is tied to the prompt and classifier-free guidance amplifies it "
        "(0 = off; 1 is a good start for style LoRAs).", group="optim", min=0.0, max=100.0, advanced=True)
    ema_decay: float = _f(0.0, "Save a moving average of the LoRA weights over the last updates instead of the "
                          "last step's weights: a steadier adapter at a high learning rate (0 = off; 0.99 averages "
                          "about the last 100 updates).", group="optim", min=0.0, max=0.9999, advanced=True)
    prediction_type: str = _f("", "Override the scheduler's prediction type ('' = the model's own).", group="optim",
                              choices=["", "epsilon", "v_prediction"], advanced=True)

    # Memory and speed
    mixed_precision: str = _f("auto", "Mixed precision: auto (bf16 on cards that have it, fp16 on older cards, fp32 on "
                              "the CPU), fp16 (most cards), bf16 (RTX 30 series and newer), no (fp32).",
                              group="memory", choices=["auto", "no", "fp16", "bf16"])
    gradient_checkpointing: bool = _f(False, "Trade speed for memory: recompute activations in the backward pass.",
                                      group="memory")
    cache_latents: bool = _f(True, "Encode images once and keep the VAE off the GPU (off when flips/crops are random).",
                             group="memory")
    cache_text_embeddings: bool = _f(True, "Encode captions once and keep the text encoders off the GPU "
                                     "(not when training the text encoder).", group="memory")
    disk_cache: bool = _f(True, "Keep the encoded pictures and captions on disk (the user cache folder), so the next "
                          "run on the same pictures and model starts without encoding them again.", group="memory",
                          advanced=True)
    int8_base: bool = _f(False, "Store the frozen UNet's large weights in 8 bits: SDXL at 1024 fits a 6 GB card "
                         "(rank 32, batch 1, checkpointing: 4.0 GiB instead of 6.2), the step is ~30% slower and the "
                         "base model is slightly rounded while training. The saved LoRA is the usual file and loads "
                         "on the full model.", group="memory")
    fast_path: bool = _f(True, "Use the captured CUDA-graph training step when the run allows it.", group="memory",
                         advanced=True)
    compile_unet: str = _f("off", "Compile parts of the UNet for a faster step (fast path only): 'blocks' compiles "
                           "the transformer blocks (SDXL: ~1.5% faster for 10-30 s at the start), 'regions' also the "
                           "ResNet blocks (~2.5 minutes at the start), per image size the first time; 'off' = "
                           "nothing compiled (the first step starts in seconds).", group="memory",
                           choices=["off", "blocks", "regions"], advanced=True)

    # Validation, checkpoints, logs
    validation_prompt: str = _f("", "Prompt for sample images during training ('' = none).", group="output")
    validation_steps: int = _f(100, "Make samples every N steps.", group="output", min=1, max=10_000_000)
    num_validation_images: int = _f(2, "Samples per validation.", group="output", min=1, max=64)
    sample_steps: int = _f(25, "Denoising steps for validation samples and generated class images.", group="output",
                           min=1, max=1000, advanced=True)
    checkpointing_steps: int = _f(100, "Save a resumable checkpoint every N steps.", group="output", min=1,
                                  max=10_000_000)
    checkpoints_total_limit: int = _f(3, "Keep at most this many checkpoints (0 = all).", group="output", min=0,
                                      max=100000)
    report_to: str = _f(_default_report_to(), "Where logs go: 'tensorboard' (needs the tensorboard package; the "
                        "default where it is installed) or 'none'.", group="output", choices=["tensorboard", "none"],
                        advanced=True)

    # ---------------------------------------------------------------- helpers
    @property
    def alpha(self) -> float:
        return float(self.lora_alpha) if self.lora_alpha > 0 else float(self.rank)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainingConfig":
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        for f in fields(self):
            _check_field(f, getattr(self, f.name))
        if self.schema_version > SCHEMA_VERSION:
            raise ConfigError(
                f"schema_version = {self.schema_version} is newer than this LoRA Studio understands "
                f"({SCHEMA_VERSION}); update LoRA Studio.", "schema_version")
        if self.mode == "dreambooth" and not self.instance_prompt.strip():
            raise ConfigError("instance_prompt is empty: a DreamBooth run needs a prompt with a rare token for the "
                              "subject, e.g. 'a photo of sks dog'.", "instance_prompt")
        if self.with_prior_preservation:
            if self.mode != "dreambooth":
                raise ConfigError("with_prior_preservation needs mode = \"dreambooth\".", "with_prior_preservation")
            if not self.class_prompt.strip():
                raise ConfigError("class_prompt is empty: prior preservation needs a class prompt, e.g. "
                                  "'a photo of a dog'.", "class_prompt")
            if not self.class_data_dir.strip():
                raise ConfigError("class_data_dir is empty: name a folder for the class images (they are "
                                  "generated there when missing).", "class_data_dir")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise ConfigError("target_modules must be a non-empty list of module names, e.g. "
                              "[\"to_q\", \"to_k\", \"to_v\", \"to_out.0\"].", "target_modules")


FIELDS = {f.name: f for f in fields(TrainingConfig)}


def field_help(name: str) -> str:
    return FIELDS[name].metadata["help"]


def _type_name(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else f.type.__name__


def _check_field(f: dataclasses.Field, value: Any) -> None:
    t = _type_name(f)
    meta = f.metadata
    expected = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": list}[t]
    if isinstance(value, bool) and t in ("int", "float"):
        raise ConfigError(f"{f.name} must be a number, got {value!r}.", f.name)
    if not isinstance(value, expected):
        raise ConfigError(f"{f.name} must be {t_words(t)}, got {value!r} ({type(value).__name__}).", f.name)
    if meta.get("choices") is not None and value not in meta["choices"]:
        opts = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"{f.name} = {value!r} is not one of {opts}.", f.name)
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"{f.name} = {value!r} is out of range: use a value from {lo} to {hi}.", f.name)


def t_words(t: str) -> str:
    return {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false",
            "list": "a list"}[t]


def from_dict(data: dict[str, Any], source: str = "config") -> TrainingConfig:
    data = dict(data)
    version = data.get("schema_version", SCHEMA_VERSION)
    data = migrate(data, version)
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        hints = []
        import difflib

        for key in unknown:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(f"{source}: unknown key {', '.join(hints)}; remove it or fix its spelling.", unknown[0])
    kwargs = {}
    for key, value in data.items():
        if _type_name(FIELDS[key]) == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kwargs[key] = value
    cfg = TrainingConfig(**kwargs)
    try:
        cfg.validate()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}", exc.key) from None
    return cfg


def migrate(data: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring an older file's keys up to the current schema.

    1 -> 2: `dataloader_num_workers` is gone (pictures are read in the training process; caching makes workers
    pointless) and `compile_unet = "auto"` meant the same as "off".
    """
    if isinstance(version, int) and version < 2:
        data.pop("dataloader_num_workers", None)
        if data.get("compile_unet") == "auto":
            data["compile_unet"] = "off"
        version = 2
    data["schema_version"] = max(int(version), 1) if isinstance(version, int) else version
    return data


def load(path: str | Path) -> TrainingConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found.") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from None
    cfg = from_dict(data, source=str(path))
    # a relative output_dir means "beside this config file", not "wherever the command was started"
    cfg.output_dir = os.path.abspath(path.parent / cfg.output_dir)
    return cfg


def dumps(cfg: TrainingConfig) -> str:
    return tomli_w.dumps(cfg.to_dict())


def save(cfg: TrainingConfig, path: str | Path) -> None:
    from lora_studio.core.io import write_text

    cfg.validate()
    write_text(path, dumps(cfg))


# ------------------------------------------------------------------------------------------- presets
# Settings per GPU memory; what does not appear keeps its default. Each names mixed_precision = "auto" although it is
# the default: picking a preset replaces an fp32 choice the card cannot afford. Measured values live in bench/.
# Peaks measured on an H100 (bench/results/archive/lowmem_h100.md, train_step_h100.md, 2026-11-27): allocated GPU memory
# of the whole run at rank 32 with the frozen base in 16-bit, cached latents and text embeddings (encoders off the
# GPU), eager / fast step. A card also loses ~0.3-0.6 GB to the CUDA context and fragmentation: keep ~1 GB spare.
PRESETS: dict[str, dict[int, dict[str, Any]]] = {
    "sd1": {
        # 512, batch 1, checkpointing: 2.20 / 2.26 GiB at rank 32 (target <= 3.5 GiB).
        4: dict(train_batch_size=1, gradient_checkpointing=True, mixed_precision="auto", cache_latents=True,
                cache_text_embeddings=True, resolution=512, rank=8),
        # batch 4, checkpointing: 3.2 GiB (the 8 GB preset; 6 GB cards get it too).
        6: dict(train_batch_size=4, gradient_checkpointing=True, mixed_precision="auto", cache_latents=True,
                cache_text_embeddings=True, resolution=512),
        # batch 4, checkpointing: 3.2 GiB (batch 4 without it needs 6.1-6.5 GiB, too close to 8 GB).
        8: dict(train_batch_size=4, gradient_checkpointing=True, mixed_precision="auto", cache_latents=True,
                cache_text_embeddings=True, resolution=512),
        # batch 4, no checkpointing: 6.1-6.5 GiB.
        12: dict(train_batch_size=4, gradient_checkpointing=False, mixed_precision="auto", cache_latents=True,
                 resolution=512),
        # batch 8, no checkpointing: 10.5-11.0 GiB (86 img/s against 73 at batch 4 with the fast step).
        16: dict(train_batch_size=8, gradient_checkpointing=False, mixed_precision="auto", cache_latents=True,
                 resolution=512),
        24: dict(train_batch_size=8, gradient_checkpointing=False, mixed_precision="auto", cache_latents=True,
                 resolution=512),
    },
    "sdxl": {
        # The frozen UNet alone is 4.8 GiB in 16-bit, 2.7 GiB with its linear layers in 8 bits (int8_base). Under a
        # 3.5 GiB cap 768 px does not train; 512 px trains (peak 3.12 GiB); its final samples did not fit while the
        # captured step was still held (skipped with a warning; the LoRA is saved first).
        # bench/results/current/e2e_h100_2026-12-07_small.md.
        4: dict(train_batch_size=1, gradient_checkpointing=True, mixed_precision="auto", cache_latents=True,
                cache_text_embeddings=True, resolution=512, rank=4, int8_base=True),
        # 1024, batch 1, checkpointing, 8-bit base: the whole run (8 class images, 100 steps, 2 samples) under a
        # 5.5 GiB cap peaks at 4.32 GiB, 228 ms/step with the captured bf16 step while sharing the GPU
        # (e2e_h100_2026-12-07_small.md); fp16 would keep the step eager (4x slower).
        6: dict(train_batch_size=1, gradient_checkpointing=True, mixed_precision="auto", cache_latents=True,
                cache_text_embeddings=True, resolution=1024, rank=16, int8_base=True),
        # 1024, batch 1, checkpointing: 6.15 / 6.28 GiB at rank 32 (target <= 7.5 GiB); rank 16 keeps a margin.
        8: dict(train_batch_size=1, gradient_checkpointing=True, mixed_precision="auto", cache_latents=True,
                cache_text_embeddings=True, resolution=1024, rank=16),
        # batch 2, checkpointing: between batch 1 (6.2 GiB) and batch 4 (8.1-9.1 GiB).
        12: dict(train_batch_size=2, gradient_checkpointing=True, mixed_precision="auto", cache_latents=True,
                 cache_text_embeddings=True, resolution=1024),
        # batch 4, checkpointing: 8.1-9.1 GiB.
        16: dict(train_batch_size=4, gradient_checkpointing=True, mixed_precision="auto", cache_latents=True,
                 resolution=1024),
        # batch 4, checkpointing (without it batch 4 needs 34.5 GiB and batch 1 12.7 GiB; batch 4 with
        # checkpointing is also the faster per image with the fast step: 11.2 img/s against 9.8).
        24: dict(train_batch_size=4, gradient_checkpointing=True, mixed_precision="auto", cache_latents=True,
                 resolution=1024),
    },
}
PRESET_SIZES = (4, 6, 8, 12, 16, 24)


def preset_for_memory(gib: float) -> int:
    """The largest preset that fits a card with ``gib`` GiB of memory."""
    fitting = [size for size in PRESET_SIZES if size <= gib + 0.5]
    return fitting[-1] if fitting else PRESET_SIZES[0]


def apply_preset(cfg: TrainingConfig, family: str, gib: int) -> TrainingConfig:
    if family not in PRESETS:
        raise ConfigError(f"no presets for model family {family!r}; use 'sd1' or 'sdxl'.", "model_family")
    if gib not in PRESETS[family]:
        raise ConfigError(f"no {gib} GB preset; choose one of {', '.join(map(str, PRESET_SIZES))}.")
    return cfg.replace(**PRESETS[family][gib])
