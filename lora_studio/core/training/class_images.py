"""DreamBooth prior preservation: make sure class_data_dir holds num_class_images, generating the rest."""

from __future__ import annotations

from pathlib import Path

import torch

from lora_studio.core.dataset.scan import scan
from lora_studio.core.events import Progress, Started
from lora_studio.core.io import write_with
from lora_studio.core.training.memory import (decode_apart, needs_vae_tiling, prompt_embeds, sample_batch,
                                              set_vae_tiling)


def existing_class_images(folder: Path) -> list[Path]:
    return scan(folder) if folder.is_dir() else []


def ensure_class_images(models, config, device, emit, stop, resolution: int, steps: int,
                        note: list | None = None) -> list[Path]:
    """Generate missing class images with the base model (no LoRA yet); reuse the ones already there."""
    folder = Path(config.class_data_dir)
    have = existing_class_images(folder)
    missing = config.num_class_images - len(have)
    if missing <= 0:
        return have[: config.num_class_images]
    emit(Started(total_steps=missing, phase="class_images",
                 description=f"generating {missing} class images for '{config.class_prompt}'"))
    pipe, batch = _low_memory_pipeline(models, config, device, resolution)
    if note is not None:
        note.append(f"batch {batch}" + ("; VAE tiled" if models.vae.use_tiling else ""))
    folder.mkdir(parents=True, exist_ok=True)
    start = len(have)
    made = 0
    index = 0
    encoded = None
    while made < missing:
        if stop():
            break
        n = min(batch, missing - made)
        seeds = [config.seed * 1_000_003 + start + made + i for i in range(n)]
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        with torch.no_grad():
            if encoded is None:  # one prompt for every batch: the text encoders visit the GPU once
                encoded = prompt_embeds(models, [config.class_prompt], device, note=note)
            models.unet.to(device)  # back from the CPU where the last decode needed its room
            images = pipe(**{k: v.expand(n, *v.shape[1:]) for k, v in encoded.items()}, num_inference_steps=steps,
                          generator=gens, height=resolution, width=resolution,
                          **decode_apart(models, device, resolution, note)).images
        for image in images:
            while (folder / f"class-{index:05d}.png").exists():
                index += 1
            write_with(folder / f"class-{index:05d}.png", lambda tmp, im=image: im.save(tmp, format="PNG"))
            made += 1
        emit(Progress(step=made, total=missing, phase="class_images"))
    return existing_class_images(folder)[: config.num_class_images]


def _low_memory_pipeline(models, config, device, resolution: int):
    """The base model's pipeline with the UNet and VAE on the device (the text encoders stay where they are:
    prompts arrive encoded), the VAE tiled where the card is short even with the UNet away for the decode
    (decode_apart), and a batch that fits."""
    models.unet.to(device)
    models.vae.to(device)
    set_vae_tiling(models.vae, needs_vae_tiling(resolution, device, models.unet))
    batch = sample_batch(models.family, resolution, config.sample_batch_size, device)
    return models.pipeline(), batch
