"""The run's memory plan: which frozen part is on the GPU in which phase, and how much the card holds.

A small card cannot hold every frozen part at once (SDXL: UNet 4.8 GiB + text encoders 1.6 GiB + the VAE and
its activations at 1024 px > 7.5 GiB). So the UNet is the one part that lives on the GPU; the text encoders go
there one at a time when prompts are encoded and back to the CPU; the VAE goes there for class images, caching
and samples and back once latents are cached; VAE tiling and smaller class-image batches when the card's free
memory is below what the phase's activations need (decoding only: training latents are encoded whole, with
the UNet off the GPU for the caching phase where the card cannot hold both). Each phase reports its seconds and peak (``Phase``).
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager

import torch

from lora_studio.core.events import Phase

# Activation bytes per pixel, measured at 1024 px in fp32 (VAE) / 16-bit with CFG (UNet, per image);
# bench/NOTES.md has the figures. With a margin: the allocator fragments.
VAE_ENCODE_BYTES_PER_PX = 2600
VAE_DECODE_BYTES_PER_PX = 4200
UNET_SAMPLE_BYTES_PER_PX = {"sd1": 1300, "sdxl": 900}
TILE_PX = 512 * 512  # a tiled VAE works on 512 px tiles (the full-size VAE's sample_size)


def _indexed(device) -> torch.device:
    # torch.cuda.mem_get_info and the per-process fraction want a numbered device; "cuda" alone is the current one
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def card_bytes(device) -> int:
    """What this process may allocate on the device: the card, or less where the process is capped."""
    if device.type != "cuda":
        return 0
    device = _indexed(device)
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda d: 1.0)(device)
    return int(total * min(1.0, fraction))


def free_bytes(device) -> int:
    """Free memory for this process: the card (or its cap) less what torch holds, less what others hold."""
    if device.type != "cuda":
        return 1 << 62  # the CPU: no plan needed
    device = _indexed(device)
    allocated = torch.cuda.memory_allocated(device)
    free_on_card, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - allocated
    return max(0, min(card_bytes(device) - allocated, free_on_card + cached))


def module_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def on_device(module, device) -> bool:
    first = next(module.parameters(), None)
    return first is not None and first.device.type == torch.device(device).type


@contextmanager
def room_for(models, needed: int, device, note: list | None = None, movable: bool = True):
    """Run the block with `needed` bytes free on the device: where the card cannot give them beside the UNet,
    the UNet waits on the CPU meanwhile and comes back after. `movable=False` while a captured training step
    holds the UNet's tensors (their addresses must not change): then the block runs as it is."""
    out = movable and device.type == "cuda" and on_device(models.unet, device) and free_bytes(device) < needed
    if out:
        models.unet.to("cpu")
        release(device)
        if note is not None and "UNet on the CPU meanwhile" not in note:
            note.append("UNet on the CPU meanwhile")
    try:
        yield out
    finally:
        if out:
            models.unet.to(device)


def encoder_room(models, device, encoders=None) -> int:
    """What the largest visiting text encoder needs on the GPU: its weights and a margin for its activations."""
    away = [e for e in (encoders if encoders is not None else models.text_encoders) if not on_device(e, device)]
    return max(module_bytes(e) for e in away) + (256 << 20) if away else 0


def decode_room(vae, resolution: int, tiled: bool) -> int:
    """What decoding one picture needs beside the VAE's weights (one tile where the VAE is tiled)."""
    return VAE_DECODE_BYTES_PER_PX * (min(TILE_PX, resolution * resolution) if tiled else resolution * resolution)


def decode_apart(models, device, resolution: int, note: list | None = None, movable: bool = True) -> dict:
    """Pipeline keyword arguments that make room for the VAE's decode after the last denoising step: where the
    card cannot hold the decode beside the UNet, the UNet goes to the CPU then (the caller brings it back).
    The pipeline's own decode runs unchanged (scaling, upcasting, post-processing)."""
    if not movable or device.type != "cuda":
        return {}
    need = decode_room(models.vae, resolution, getattr(models.vae, "use_tiling", False))

    def step_end(pipe, i, t, kwargs):
        if i == pipe.num_timesteps - 1 and on_device(models.unet, device) and free_bytes(device) < need:
            models.unet.to("cpu")
            release(device)
            if note is not None and "UNet on the CPU while decoding" not in note:
                note.append("UNet on the CPU while decoding")
        return kwargs

    return {"callback_on_step_end": step_end}


def release(device) -> None:
    """Give freed blocks back, so the next phase (and a preview after the run) finds the card empty."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def needs_vae_tiling(resolution: int, device, unet=None) -> bool:
    """Decoding (class images, samples) in tiles where the card is short: a picture, tiny seams at most. Training
    latents are never encoded in tiles (each tile's own normalisation changes them); see encode_needs_room.
    `unet`: a UNet that will leave the GPU for the decode (decode_apart): its room counts as free."""
    free = free_bytes(device) + (module_bytes(unet) if unet is not None and on_device(unet, device) else 0)
    return resolution * resolution > TILE_PX and free < VAE_DECODE_BYTES_PER_PX * resolution**2


def encode_room(resolution: int) -> int:
    """What encoding one training picture needs beside the VAE's weights (never tiled)."""
    return VAE_ENCODE_BYTES_PER_PX * resolution * resolution


def set_vae_tiling(vae, on: bool) -> None:
    # Encode and decode one picture at a time either way (slicing); tiles only where the card needs them.
    vae.enable_slicing()
    if on:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


def sample_batch(family: str, resolution: int, wanted: int, device) -> int:
    """How many class images to generate at once: as many as wanted that fit beside what is already there."""
    per_image = UNET_SAMPLE_BYTES_PER_PX.get(family, 1300) * resolution * resolution
    fits = max(1, int(free_bytes(device) * 0.8 // max(1, per_image)))
    return max(1, min(wanted, fits))


@contextmanager
def phase(name: str, device, emit, note: list | None = None):
    """Time a phase and its peak GPU memory; emit ``Phase`` at its end (``note`` may be filled inside)."""
    note = note if note is not None else []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    yield note
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    emit(Phase(name=name, seconds=round(time.perf_counter() - t0, 3), peak_bytes=peak, note="; ".join(note)))


def prompt_embeds(models, prompts: list[str], device, encoders=None, note: list | None = None,
                  movable: bool = True) -> dict:
    """Pipeline keyword arguments with the prompts (and the empty negative prompt) already encoded, each text
    encoder on the GPU only for its own call (the UNet steps out where the card cannot hold both: room_for):
    the pipeline then never needs them on the device."""
    with room_for(models, encoder_room(models, device, encoders), device, note, movable):
        return _prompt_embeds(models, prompts, device, encoders)


def _prompt_embeds(models, prompts: list[str], device, encoders=None) -> dict:
    from lora_studio.core.training.models import encode_tokens, tokenize_all

    embeds, pooled = encode_tokens(models, tokenize_all(models, prompts), encoders, visit=device)
    kw = {"prompt_embeds": embeds}
    if not models.is_sdxl:
        kw["negative_prompt_embeds"] = encode_tokens(models, tokenize_all(models, [""] * len(prompts)), encoders,
                                                     visit=device)[0]
        return kw
    kw["pooled_prompt_embeds"] = pooled
    if models.extras.get("force_zeros_for_empty_prompt", True):
        kw["negative_prompt_embeds"] = torch.zeros_like(embeds)
        kw["negative_pooled_prompt_embeds"] = torch.zeros_like(pooled)
    else:
        neg, neg_pooled = encode_tokens(models, tokenize_all(models, [""] * len(prompts)), encoders, visit=device)
        kw["negative_prompt_embeds"], kw["negative_pooled_prompt_embeds"] = neg, neg_pooled
    return kw
