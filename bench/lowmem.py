"""Low-memory presets: the training run's GPU peak for SDXL 1024 and SD 1.5 512, rank 32, batch 1.

    python -m bench.lowmem [--tiny]

Everything the run keeps on the GPU is counted: the frozen UNet, LoRA weights with their gradients and
AdamW state, the cached latents and text embeddings of the batch; the VAE and text encoders are off the
GPU (cached latents and embeddings). Variants per model:
  bf16            frozen base in bf16, gradient checkpointing, eager step
  bf16+fast       the same through FastStep (the graph's memory pool counted)
  int8            (stretch) frozen Linear weights stored as int8 with a per-output-channel scale,
                  dequantised on the fly in forward and backward (nothing extra saved for backward):
                  lora_studio.core.accel.int8_base, quantised on the host before the move as the engine does
  int8+fast       the same through FastStep
  bf16+engine     FastStep with the engine's kernels for a checkpointed run (core.accel.Options.training: fast LoRA
  int8+engine     forward, pure bf16, fused q/k/v, fast_proj, fast_geglu, fast_layernorm + fast_block,
                  channels-last maps on fast_norm)
Peaks are torch.cuda.max_memory_allocated from an empty GPU (build included) and, separately, during
training only (reset after setup). Targets: SDXL <= 7.5 GiB (8 GB card), stretch 5.5 GiB; SD 1.5 <= 3.5 GiB.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import time
from pathlib import Path

import torch

from bench import models as M
from bench.steps import alphas_cumprod, free, make_step, time_steps
from lora_studio.core.accel import Options, compile_choice, prepare
from lora_studio.core.accel.graphs import FastStep, capturable_adamw, capturable_checkpointing
from lora_studio.core.accel.int8_base import quantize_frozen_linears
from bench.record import default_out, invoked
from bench.record import save as save_result

ROOT = Path(__file__).resolve().parents[1]

GIB = 2 ** 30


def measure(name, spec, *, int8, fast, device, args, rank=32, engine=False):
    if args.image:
        spec = (spec[0], args.image, *spec[2:])
    free(device)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    torch.manual_seed(0)  # the same random base and LoRA for every variant
    # int8 as the engine does it (config int8_base): LoRA in, weights quantised on the host, then moved. Every
    # variant is built on the host, so all start from the same random weights (the first losses compare).
    unet, _ = M.build_unet(spec[0], "cpu")
    params = M.add_lora(unet, rank)
    saved = quantize_frozen_linears(unet) if int8 else 0
    unet.to(device)
    if fast:
        capturable_checkpointing(unet)
        opt = capturable_adamw(params, lr=1e-4, device=device)
    else:
        unet.enable_gradient_checkpointing()
        opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    data = M.make_batch(spec, 1, device, generator=g)
    # Fixed noise and timestep, so the first loss compares int8 storage against bf16 on the same input.
    data["noise"] = torch.randn(data["latents"].shape, generator=g).to(device)
    data["timesteps"] = torch.tensor([500], device=device)
    cl = False
    if engine:  # the engine's kernels as it sets them up with gradient checkpointing (nothing compiled)
        cl = prepare(unet, Options.training(compile=compile_choice())).channels_last
    step = make_step(unet, params, opt, acp=alphas_cumprod(device), autocast_cache=not fast, channels_last=cl,
                     autocast=not engine)
    if fast:
        step = FastStep(step, device=device, params=params)
    free(device)
    setup_alloc = torch.cuda.memory_allocated() / GIB if cuda else None
    peak_build = torch.cuda.max_memory_allocated() / GIB if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    loss0 = float(step(data))
    setup_s = time.perf_counter() - t0
    timing = time_steps(lambda: step(data), device, warmup=1, budget_s=args.budget, n_min=3, n_max=20)
    row = {"model": name, "int8": int8, "fast": fast, "engine": engine, "channels_last": cl, "rank": rank,
           "first_loss": loss0,
           "ms": timing["ms"], "n": timing["n"], "setup_s": setup_s, "int8_bytes_saved": saved,
           "resident_gib": setup_alloc, "peak_build_gib": peak_build,
           "peak_train_gib": torch.cuda.max_memory_allocated() / GIB if cuda else None,
           # what the allocator held at most (fixed segments strand freed memory; see PYTORCH_CUDA_ALLOC_CONF)
           "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB if cuda else None}
    if fast:
        row["captured"] = any(v is not None for v in step.graphs.values())
    row["peak_gib"] = max(row["peak_build_gib"] or 0, row["peak_train_gib"] or 0) if cuda else None
    del step, opt, params, unet, data
    free(device)
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    invoked(__spec__.name, argv)  # the command line every result records
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--models", default="sdxl,sd15")
    ap.add_argument("--variants", default="bf16,bf16+fast,int8,int8+fast")
    ap.add_argument("--budget", type=float, default=1.5)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--image", type=int, default=0, help="image size in pixels (default: the model's own)")
    ap.add_argument("--tag", default="", help="appended to the result file names")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=default_out())
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny or device == "cpu"
    specs = M.tiny_models() if tiny else M.MODELS
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    result = {"card": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "tiny": tiny,
              "alloc_conf": os.environ.get("PYTORCH_ALLOC_CONF") or os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
              "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rows": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = ("tiny_" if tiny else "") + ("h100" if "H100" in result["card"] else "gpu" if device == "cuda" else "cpu")
    tag += args.tag
    result.update(rank=args.rank, image=args.image or None)
    for name in args.models.split(","):
        for v in args.variants.split(","):
            try:
                row = measure(name, specs[name], int8="int8" in v, fast="fast" in v or "engine" in v,
                              engine="engine" in v, device=device, args=args, rank=args.rank)
            except torch.cuda.OutOfMemoryError as exc:
                row = {"model": name, "variant": v, "error": str(exc).splitlines()[0]}
            row["variant"] = v
            result["rows"].append(row)
            save(result, out, tag)  # after every row: a run cut short keeps its numbers
    print(render(result))
    return 0


def save(result, out: Path, tag: str) -> None:
    save_result(out, f"lowmem_{tag}", result, render(result))


def render(result) -> str:
    lines = [f"# Low-memory presets — {result['card']}, {result['date']}", "",
             f"Rank {result.get('rank', 32)}, batch 1, "
             f"{str(result['image']) + ' px' if result.get('image') else 'SDXL 1024 / SD 1.5 512 px'}, "
             "gradient checkpointing, cached latents + text embeddings (encoders off the GPU). "
             "'peak in training' is max_memory_allocated from the first step on (everything the run keeps, the "
             "graph pool included); 'from empty' adds building the model (int8 rows build and quantise it on the "
             "host first, as the engine does).", "",
             f"Allocator settings: {result.get('alloc_conf') or 'torch defaults'}.", "",
             "| model | variant | peak in training GiB | reserved in training GiB | peak from empty GiB | resident GiB | "
             "ms/step | first loss |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | OOM | | | | | {r['error']} |")
            continue
        f = lambda v, s: "-" if v is None else format(v, s)  # noqa: E731
        lines.append(f"| {r['model']} | {r['variant']} | {f(r['peak_train_gib'], '.2f')} | "
                     f"{f(r.get('peak_reserved_gib'), '.2f')} | {f(r['peak_gib'], '.2f')} | "
                     f"{f(r['resident_gib'], '.2f')} | {r['ms']:.1f} | {r['first_loss']:.5f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
