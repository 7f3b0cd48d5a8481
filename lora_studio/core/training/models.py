"""Load the frozen parts of a base model for training, and encode prompts for SD 1.x and SDXL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Models:
    family: str  # "sd1" | "sdxl"
    pipeline_class: type
    tokenizers: list
    text_encoders: list
    vae: Any
    unet: Any
    noise_scheduler: Any
    sample_scheduler: Any  # the pipeline's own scheduler, for class images and samples
    extras: dict = field(default_factory=dict)  # other pipeline components (feature_extractor, ...)

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    def pipeline(self, unet=None, text_encoders=None):
        """A pipeline sharing these components (optionally with a trained unet/encoders)."""
        kw = dict(vae=self.vae, unet=unet if unet is not None else self.unet, scheduler=self.sample_scheduler)
        encs = text_encoders if text_encoders is not None else self.text_encoders
        kw["text_encoder"], kw["tokenizer"] = encs[0], self.tokenizers[0]
        if self.is_sdxl:
            kw["text_encoder_2"], kw["tokenizer_2"] = encs[1], self.tokenizers[1]
        else:
            kw.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        kw.update({k: v for k, v in self.extras.items() if k not in kw})
        pipe = self.pipeline_class(**kw)
        pipe.set_progress_bar_config(disable=True)
        return pipe


def load_models(name_or_path: str, dtype: torch.dtype = torch.float32) -> Models:
    """Load a pipeline (CPU) through the models layer and split it into trainable-ready parts.

    ``dtype``: the frozen weights' precision, read straight into it (SDXL in fp32 first would be a 10 GB
    detour and seconds of conversion); the VAE is kept in fp32 whatever it is.
    """
    from diffusers import DDPMScheduler

    from lora_studio.core.models.loader import load_pipeline, resolve_model

    ref = resolve_model(name_or_path)
    direct = ref.kind == "diffusers" and (ref.path / "vae").is_dir()  # a folder: each part read in its precision
    # the VAE in fp32 from its own file, never a 16-bit copy cast up
    pipe = load_pipeline(ref, torch_dtype={"default": dtype, "vae": torch.float32} if direct else torch.float32,
                         device="cpu")
    vae = pipe.vae
    family = ref.family
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if family == "sdxl" else [])
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    extras = {}
    if family == "sdxl":
        for name in ("image_encoder", "feature_extractor"):
            if name in pipe.components:
                extras[name] = pipe.components[name]
        # Samples and class images pass encoded prompts: the empty negative prompt is zeros or "" as the model says.
        extras["force_zeros_for_empty_prompt"] = bool(pipe.config.get("force_zeros_for_empty_prompt", True))
    models = Models(family, type(pipe), tokenizers, encoders, vae, pipe.unet, noise_scheduler,
                    pipe.scheduler, extras)
    for module in [models.vae, models.unet, *models.text_encoders]:
        module.requires_grad_(False)
        module.eval()
    return models


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def encode_tokens(models: Models, token_ids: list[torch.Tensor], text_encoders=None, visit=None):
    """(prompt_embeds, pooled_embeds or None) for already tokenized prompts, one id tensor per encoder.

    ``visit(device)``: each encoder goes to that device for its own call and back where it was after it (the
    memory plan: one text encoder at a time on a small card); the outputs stay on that device.
    """
    encoders = text_encoders if text_encoders is not None else models.text_encoders
    parts, pooled = [], None
    for encoder, ids in zip(encoders, token_ids):
        was = module_device(encoder)
        if visit is not None:
            encoder.to(visit)
        try:
            if not models.is_sdxl:
                return encoder(ids.to(module_device(encoder)), return_dict=False)[0], None
            out = encoder(ids.to(module_device(encoder)), output_hidden_states=True)
        finally:
            if visit is not None:
                encoder.to(was)
        pooled = out[0]  # the last encoder's projected pooled output is what SDXL conditions on
        parts.append(out.hidden_states[-2])
    return torch.cat(parts, dim=-1), pooled


def module_device(module) -> torch.device:
    return next(module.parameters()).device


def tokenize_all(models: Models, prompts: list[str]) -> list[torch.Tensor]:
    return [tokenize(t, prompts) for t in models.tokenizers]


def sdxl_time_ids(original_size, crop_top_left, target_size) -> torch.Tensor:
    return torch.tensor([*original_size, *crop_top_left, *target_size], dtype=torch.float32)
