"""The LoRA training step both paths run, and the timing helpers the benchmark scripts share."""

from __future__ import annotations

import gc
import statistics
import time

import torch
import torch.nn.functional as F

# SD 1.x / SDXL training noise schedule (scaled linear, 1000 steps).
def alphas_cumprod(device) -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float().to(device)


def make_step(unet, params, optimizer, *, acp, max_grad_norm: float = 1.0, autocast_cache: bool = True,
              channels_last: bool = False, amp_dtype=torch.bfloat16, autocast: bool = True):
    """``step(batch) -> loss``: noise the cached latents, predict the noise, MSE, backward, clip, AdamW.

    Noise and timesteps come from the batch when it has them (exact comparisons), else from torch's
    default generator on the device (graph-safe). ``autocast=False``: the pure low-precision step (inputs
    cast to the frozen UNet's dtype, no autocast; fast_kernels.install_fast_lora casts the fp32 adapters).
    """
    import contextlib

    device_type = next(unet.parameters()).device.type
    unet_dtype = next(p.dtype for p in unet.parameters() if not p.requires_grad)

    def step(batch):
        latents = batch["latents"]
        noise = batch.get("noise")
        if noise is None:
            noise = torch.randn_like(latents)
        t = batch.get("timesteps")
        if t is None:
            t = torch.randint(0, acp.numel(), (latents.shape[0],), device=latents.device)
        a = acp[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1.0 - a).sqrt() * noise
        if channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        added = None
        if "text_embeds" in batch:
            added = {"text_embeds": batch["text_embeds"], "time_ids": batch["time_ids"]}
        ehs = batch["encoder_hidden_states"]
        if autocast:
            ctx = torch.autocast(device_type=device_type, dtype=amp_dtype, cache_enabled=autocast_cache)
        else:
            ctx = contextlib.nullcontext()
            noisy, ehs = noisy.to(unet_dtype), ehs.to(unet_dtype)
            if added is not None:
                added = {k: v.to(unet_dtype) for k, v in added.items()}
        with ctx:
            pred = unet(noisy, t, ehs, added_cond_kwargs=added).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    step.channels_last = channels_last  # (FastStep reads it: no cuDNN autotuning on channels-last maps)
    return step


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def free(device):
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def time_steps(run, device, *, warmup: int, budget_s: float, n_min: int, n_max: int) -> dict:
    """Median step time after warm-up; per-step CUDA events, so no host sync sits inside the region."""
    for _ in range(warmup):
        run()
    sync(device)
    t0 = time.perf_counter()
    run()
    sync(device)
    est = time.perf_counter() - t0
    n = max(n_min, min(n_max, int(budget_s / max(est, 1e-4))))
    times = []
    if torch.device(device).type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
        events[0].record()
        for i in range(n):
            run()
            events[i + 1].record()
        torch.cuda.synchronize()
        times = [events[i].elapsed_time(events[i + 1]) for i in range(n)]
    else:
        for _ in range(n):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1e3)
    return {"ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times), "n": n,
            "ms_mean": statistics.fmean(times)}


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_tflops(device, n: int = 8192, reps: int = 20) -> float:
    """bf16 matrix-product rate on random data, the measured ceiling for the FLOP fraction."""
    if torch.device(device).type != "cuda":
        return float("nan")
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


_CACHES: dict[str, str] = {}


def cold_cache(key: str) -> None:
    """A fresh inductor/Triton cache per key (model and path or variant): its first row's setup is a user's
    first run (cold); its later batch sizes reuse what it compiled, as a user's second bucket shape would."""
    import tempfile

    if key not in _CACHES:
        _CACHES[key] = tempfile.mkdtemp(prefix=f"inductor_{key}_")
    use_cache(_CACHES[key])


def use_cache(folder: str) -> None:
    """Point inductor's and Triton's caches at `folder` (read when a compile starts)."""
    import os

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    os.environ["TRITON_CACHE_DIR"] = os.path.join(folder, "triton")
