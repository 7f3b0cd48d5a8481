"""Training-step benchmark: the reference recipe against LoRA Studio's fast step, in one run.

    python -m bench.train_step                  # full-size SD 1.5 (512) and SDXL (1024) on a CUDA GPU
    python -m bench.train_step --tiny           # demo-sized UNets on the CPU: a smoke test of the harness

Reference: frozen bf16 UNet, peft LoRA rank 32 on to_q/to_k/to_v/to_out.0 with fp32 trainable weights,
AdamW (foreach), bf16 autocast, cached latents, eager. Engine: the same step wrapped in
``lora_studio.core.accel.graphs.FastStep`` with a fused capturable AdamW.
Writes ``bench/results/train_step_<card>_<date>.json`` and ``.md`` (or under --out).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from bench import models as M
from bench.steps import (alphas_cumprod, cold_cache, count_flops, free, make_step,
                         matmul_peak_tflops, time_steps, use_cache)
from lora_studio.core.accel import Options, compile_choice, prepare, undo
from lora_studio.core.accel.fast_norm import uninstall_resnet_forward
from lora_studio.core.accel.graphs import FastStep, capturable_adamw, capturable_checkpointing
from bench.record import default_out, invoked
from bench.record import save as save_result

ROOT = Path(__file__).resolve().parents[1]

GIB = 2 ** 30
SETUP_PATHS = ("reference", "graph", "fast", "fast_compiled_qkv", "engine")
# Words of a fast path's name (fast_compiled_qkv, fast_regions_cl, ...): which fast_kernels.COMPILE_SETS entry is
# compiled; "cl" = channels-last frozen weights and input; "qkv" = fast_qkv's fused self-attention projections.
PATH_WORDS = {"compiled": "blocks", "res": "blocks_res", "regions": "regions", "unet": "unet"}
NOMINAL_PEAK_TFLOPS = 790.0


def card_name(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()})"


def mem(device) -> dict:
    if torch.device(device).type != "cuda":
        return {"peak_gib": None, "start_gib": None}
    return {"peak_gib": torch.cuda.max_memory_allocated() / GIB}


def compile_seconds() -> dict:
    """dynamo's cumulative compile phase timers, in seconds (empty if this torch has none)."""
    try:
        from torch._dynamo.utils import calculate_time_spent

        return {k: float(v) for k, v in calculate_time_spent().items()}
    except Exception:  # noqa: BLE001 - a private API: the row simply has no breakdown
        return {}


def run_config(name, spec, unet, params, *, path, batch, ckpt, device, args, acp, flops_per_image, log):
    """One row: build the optimizer and step for `path`, time it, report memory; leaves no state behind."""
    free(device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start_alloc = torch.cuda.memory_allocated() / GIB if cuda else None
    g = torch.Generator().manual_seed(batch)
    data = M.make_batch(spec, batch, device, generator=g)
    words = set(path.split("_")[1:])  # fast_compiled_qkv -> {"compiled", "qkv"}; see path_words
    channels_last = "cl" in words
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    row = {"model": name, "path": path, "batch": batch, "checkpointing": ckpt}
    warnings: list[str] = []
    compiling = False
    accel = None
    t_setup = time.perf_counter()
    if path == "reference":
        if ckpt:
            unet.enable_gradient_checkpointing()
        else:
            unet.disable_gradient_checkpointing()
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
        step = make_step(unet, params, opt, acp=acp)
        run = lambda: step(data)  # noqa: E731
    else:
        if ckpt:
            capturable_checkpointing(unet)
        else:
            unet.disable_gradient_checkpointing()
        opt = capturable_adamw(params, lr=1e-4, weight_decay=1e-2, device=device)
        # graph: the captured step alone. fast*: the engine's fast path through core.accel.prepare (LoRA
        # forward without peft's extra passes, pure bf16 step) with the kernels PATH_WORDS name.
        pure = path != "graph"
        options = Options.training(compile=compile_choice())  # exactly the engine's fast path
        if path.split("_")[0] != "engine":  # gn (with cl): channels-last maps on fast_norm's GroupNorm
            options = dataclasses.replace(options, compile=next((PATH_WORDS[w] for w in words if w in PATH_WORDS), None),
                                          fuse_qkv="qkv" in words, fast_proj="proj" in words,
                                          channels_last="gn" in words, fast_geglu="geglu" in words, fast_ln="ln" in words)
        compiling = bool(options.compile)
        if compiling:
            torch._dynamo.reset()  # each row compiles its own shapes (and stays under the recompile limit)
            if not args.cache_dir:  # else: the given cache, warm from an earlier process (a user's second run)
                cold_cache(f"{name}_{path}")
        if pure:
            accel = prepare(unet, options)
            channels_last = channels_last or accel.channels_last  # the latents follow the UNet's layout
            if "nores" in words:  # fast_norm's GroupNorms without its fused ResnetBlock2D forward
                uninstall_resnet_forward(unet)
        step = FastStep(make_step(unet, params, opt, acp=acp, autocast_cache=False, channels_last=channels_last,
                                  autocast=not pure or not cuda),
                        device=device, params=params, on_warning=warnings.append,
                        cudnn_benchmark=False if "nobench" in words else None)  # None: FastStep's choice
        run = lambda: step(data)  # noqa: E731
    spent = compile_seconds()
    try:
        loss = run()  # first step (fast: warm-up + capture)
        float(loss)
        row["first_step_s"] = time.perf_counter() - t_setup
        if compiling:
            after = compile_seconds()  # where a compiling row's first step went (dynamo's own phase timers)
            row["compile_s"] = {k: round(v - spent.get(k, 0.0), 2) for k, v in after.items() if v - spent.get(k, 0.0) > 0.05}
        timing = time_steps(run, device, warmup=1 if path != "reference" else 2, budget_s=args.budget,
                            n_min=args.min_steps, n_max=args.max_steps)
        row.update(timing)
        row["loss"] = float(run())
        row["images_per_s"] = batch / (timing["ms"] / 1e3)
        if flops_per_image:
            tflops = flops_per_image * batch / (timing["ms"] / 1e3) / 1e12
            row["tflops"] = tflops
            row["frac_nominal_peak"] = tflops / NOMINAL_PEAK_TFLOPS
            if args.peak_tflops == args.peak_tflops:  # not NaN
                row["frac_measured_peak"] = tflops / args.peak_tflops
        if cuda:
            torch.cuda.synchronize()
            row["peak_gib"] = torch.cuda.max_memory_allocated() / GIB
            row["start_gib"] = start_alloc
            # What this row alone needs on top of the model: earlier rows leave cuBLAS/cuDNN workspaces behind.
            if args.base_gib is not None:
                row["peak_clean_gib"] = row["peak_gib"] - start_alloc + args.base_gib
        if path != "reference":
            row["captured"] = bool(step.graphs) and all(v is not None for v in step.graphs.values())
            row["fast_active"] = step.active
            row["fallback_reason"] = step.reason or (warnings[0] if warnings else None)
    except torch.cuda.OutOfMemoryError as exc:
        row["error"] = f"out of memory: {str(exc).splitlines()[0]}"
    finally:
        del step, run, opt
        for p in params:
            p.grad = None
        if accel is not None:
            undo(accel)
        if channels_last:  # (the "cl" word without fast_norm)
            unet.to(memory_format=torch.contiguous_format)
        free(device)
    log(row)
    return row


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def markdown(result) -> str:
    lines = [f"# Training-step benchmark — {result['card']}, {result['date']}", "",
             f"torch {result['torch']}, diffusers {result['diffusers']}, peft {result['peft']}; "
             f"matmul peak measured {fmt(result.get('peak_tflops'), '.0f')} TFLOP/s, "
             f"fractions below use {NOMINAL_PEAK_TFLOPS:.0f}. Median of n steps (CUDA events) after warm-up.",
             "", "| model | path | batch | ckpt | ms/step | speed-up | img/s | TFLOP/s | % peak | peak GiB* "
             "| first step s | n | note |", "|" + "---|" * 13]
    foot = ("*peak: torch.cuda.max_memory_allocated in the row, less what earlier rows left allocated (workspaces), "
            "so each row reads as a fresh run: model + LoRA + optimizer + activations (+ the graph pool).")
    ref = {(r["model"], r["batch"], r["checkpointing"]): r for r in result["rows"] if r["path"] == "reference"}
    for r in result["rows"]:
        base = ref.get((r["model"], r["batch"], r["checkpointing"]))
        speed = base["ms"] / r["ms"] if base and "ms" in base and "ms" in r else None
        note = r.get("error") or ("" if r.get("captured", True) else f"eager fallback: {r.get('fallback_reason')}")
        if r.get("compile_s"):
            note += (" " if note else "") + "compile s: " + ", ".join(f"{k} {v:g}" for k, v in r["compile_s"].items())
        lines.append(
            f"| {r['model']} | {r['path']} | {r['batch']} | {'on' if r['checkpointing'] else 'off'} | "
            f"{fmt(r.get('ms'), '.1f')} | {fmt(speed, '.2f')}x | {fmt(r.get('images_per_s'), '.1f')} | "
            f"{fmt(r.get('tflops'), '.0f')} | {fmt(r.get('frac_nominal_peak') and 100 * r['frac_nominal_peak'], '.1f')} | "
            f"{fmt(r.get('peak_clean_gib', r.get('peak_gib')), '.2f')} | {fmt(r.get('first_step_s'), '.2f')} | {r.get('n', '-')} | {note} |")
    lines += ["", foot, "", "| model | build s | LoRA s | setup before first step (" + " / ".join(SETUP_PATHS) + ") s, "
              "cold compile caches | GFLOP per image (fwd+bwd) |", "|---|---|---|---|---|"]
    for name, s in result["setup"].items():
        setups = " / ".join(fmt(s.get(f"{p}_setup_s"), ".2f") for p in SETUP_PATHS)
        lines.append(f"| {name} | {s['build_s']:.2f} | {s['lora_s']:.2f} | {setups} | "
                     f"{fmt(s.get('flops_per_image') and s['flops_per_image'] / 1e9, '.3g')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    invoked(__spec__.name, argv)  # the command line every result records
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="demo-sized UNets (CPU smoke test of the harness)")
    ap.add_argument("--models", default="sd15,sdxl")
    ap.add_argument("--batches", default=None, help="comma list (default 1,4,8; --tiny 1,2)")
    ap.add_argument("--batches-for", action="append", default=[], metavar="MODEL=B,B",
                    help="batches for one model, overriding --batches (e.g. sdxl=1,4)")
    ap.add_argument("--paths-for", action="append", default=[], metavar="MODEL=P,P",
                    help="paths for one model, overriding --paths (e.g. sdxl=reference,fast,fast_compiled)")
    ap.add_argument("--checkpointing", default="off,on", help="off, on or off,on")
    ap.add_argument("--paths", default="reference,engine", help="reference, engine (the engine's fast path as "
                    "engine.make_optimizer sets it up for the model), fast (LoRA forward + pure bf16), graph "
                    "(the captured step alone), fast_cl (+ channels-last), fast_compiled (+ compiled blocks); "
                    "other fast_* names combine the words compiled / res / regions / unet (compiled sets), cl, qkv "
                    "(fused self-attention q/k/v), proj (copy-free Transformer2DModel projections), gn (with cl: fast_norm's channels-last GroupNorm), geglu (fast_geglu's fused GEGLU), ln (fast_layernorm + fast_block: Triton LayerNorms with the residual adds inside), nores (gn without its fused ResnetBlock2D), nobench (no cuDNN autotuning on NCHW maps either: channels-last steps never autotune, FastStep's default), e.g. fast_regions_cl, fast_compiled_qkv")
    ap.add_argument("--cl-batches", default="", help="also run fast_cl (channels-last) at these batches, "
                    "checkpointing off, e.g. 1,4")
    ap.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                    help="set torch._inductor.config.KEY (a Python literal) before compiling, e.g. pattern_matcher=False")
    ap.add_argument("--grad-input", choices=("on", "off"), default="on",
                    help="off: compiled blocks take their inputs as they come (before attempt 13, SDXL compiled three "
                    "graphs instead of two); on: as the engine does (fast_kernels.GRAD_INPUT_CLASSES)")
    ap.add_argument("--cache-dir", default=None, help="use this inductor/Triton cache for every compiling row "
                    "instead of a fresh one per row (run twice to time a warm cache, as a user's second run)")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed steps per row")
    ap.add_argument("--min-steps", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=default_out())
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny or device == "cpu"
    if args.inductor:
        import ast

        import torch._inductor.config as inductor_config

        for item in args.inductor:
            key, _, value = item.partition("=")
            setattr(inductor_config, key, ast.literal_eval(value))
    if args.cache_dir:
        use_cache(args.cache_dir)
    if args.grad_input == "off":
        import lora_studio.core.accel.fast_kernels as fast_kernels

        fast_kernels.GRAD_INPUT_CLASSES = ()
    batches = [int(b) for b in (args.batches or ("1,2" if tiny else "1,4,8")).split(",")]
    ckpts = [c == "on" for c in args.checkpointing.split(",")]
    paths = args.paths.split(",")
    args.budget = args.budget if args.budget is not None else (0.2 if tiny else 2.5)
    args.min_steps = args.min_steps if args.min_steps is not None else (2 if tiny else 8)
    specs = M.tiny_models() if tiny else M.MODELS
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    t_init = time.perf_counter()
    if cuda:
        torch.zeros(1, device=device)
    cuda_init_s = time.perf_counter() - t_init
    args.peak_tflops = matmul_peak_tflops(device) if cuda and not tiny else float("nan")
    import diffusers
    import peft

    result = {"card": card_name(device), "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__,
              "tiny": tiny, "rank": args.rank, "inductor": args.inductor, "grad_input": args.grad_input,
              "cache_dir": args.cache_dir, "peak_tflops": args.peak_tflops, "nominal_peak_tflops": NOMINAL_PEAK_TFLOPS, "cuda_init_s": cuda_init_s, "rows": [], "setup": {}}

    def log(row):
        keys = ("model", "path", "batch", "checkpointing", "ms", "peak_gib", "first_step_s", "error", "captured",
                "compile_s")
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k in keys}),
              flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    card = "cpu" if not cuda else result["card"].split()[1].lower() if len(result["card"].split()) > 1 else "gpu"
    stem = f"train_step_{'tiny_' if tiny else ''}{card}{args.tag}"

    def save():  # after every row, so a run cut short still leaves its numbers
        save_result(out, stem, result, markdown(result))

    acp = alphas_cumprod(device)
    for name in args.models.split(","):
        spec = specs[name]
        unet, build_s = M.build_unet(spec[0], device)
        t = time.perf_counter()
        params = M.add_lora(unet, rank=args.rank)
        lora_s = time.perf_counter() - t
        args.base_gib = torch.cuda.memory_allocated() / GIB if cuda else None
        setup = result["setup"][name] = {"build_s": build_s, "lora_s": lora_s, "base_gib": args.base_gib,
                                         "params": sum(p.numel() for p in unet.parameters()),
                                         "lora_params": sum(p.numel() for p in params)}
        # Model FLOPs of one step per image: forward + backward, no recompute, counted once at batch 1.
        opt = torch.optim.AdamW(params, lr=0.0)
        step = make_step(unet, params, opt, acp=acp)
        data = M.make_batch(spec, 1, device)
        unet.disable_gradient_checkpointing()
        setup["flops_per_image"] = count_flops(lambda: step(data))
        del opt, step, data
        for p in params:
            p.grad = None
        free(device)
        model_paths = dict(item.split("=", 1) for item in args.paths_for).get(name)
        model_paths = model_paths.split(",") if model_paths else paths
        per_model = dict(item.split("=", 1) for item in args.batches_for)
        model_batches = [int(b) for b in per_model[name].split(",")] if name in per_model else batches
        for batch in model_batches:
            for ckpt in ckpts:
                extra = ["fast_cl"] if (not ckpt and str(batch) in args.cl_batches.split(",")
                                        and "fast_cl" not in paths) else []
                for path in model_paths + extra:
                    row = run_config(name, spec, unet, params, path=path, batch=batch, ckpt=ckpt, device=device,
                                     args=args, acp=acp, flops_per_image=setup["flops_per_image"], log=log)
                    result["rows"].append(row)
                    save()
                    key = f"{path}_setup_s"
                    if key not in setup and "first_step_s" in row:
                        setup[key] = build_s + lora_s + row["first_step_s"]
        del unet, params
        free(device)

    save()
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
