"""Where the captured step's milliseconds go, and what each kernel-level speed-up buys (issue 8, attempts 6+).

    python -m bench.profile_step [--models sd15:8,sdxl:4] [--variants base,cudnn,...] [--out bench/results]

For each model:batch it profiles the fast step's kernels once (torch.profiler, the step run eagerly: the
same kernels the graph replays) and sums GPU time by kind (GEMM, convolution, attention, norms,
elementwise, optimizer, Triton), then times variants of the captured step, each on a freshly built UNet:

  base        FastStep as the engine runs it (graph, torch's SDPA choice, peft LoRA forward)
  flash/cudnn/efficient   the SDPA backend forced
  lora        fast_kernels.install_fast_lora (no fp32 input copy, scale folded into B, add fused into addmm)
  ff          + torch.compile of each FeedForward (GEGLU)          (with lora and the best SDPA so far)
  blocks      + torch.compile of each BasicTransformerBlock        (with lora and the best SDPA so far)
  blocks_res  + ResnetBlock2D compiled too
  bf16, bf16_ff, bf16_blocks, bf16_cl   the pure bf16 step (no autocast) with fast LoRA, + compiled
              FeedForward / BasicTransformerBlock, + channels-last
  bf16_blocks_res(_cl), bf16_regions(_cl), bf16_unet_cl   + compiled blocks and ResnetBlock2D / every
              Transformer2DModel and ResnetBlock2D (+ channels-last) / the whole UNet, channels-last
  bf16_qkv, bf16_blocks_qkv   + self-attention's q/k/v and LoRA A factors fused (fast_qkv), + compiled blocks;
              any other variant name ending in _qkv: that variant with fast_qkv; ending in _proj: with
              fast_proj (Transformer2DModel's projections without layout copies), e.g. bf16_qkv_proj; ending
              in _gn: with fast_norm's channels-last GroupNorm, e.g. bf16_cl_qkv_proj_gn; ending in _geglu: with
              fast_geglu (bf16_cl_qkv_proj_gn_geglu is the engine's step in attempt 16); ending in _ln: with
              fast_layernorm + fast_block (bf16_cl_qkv_proj_gn_geglu_ln: the engine's step since attempt 17)
Compiled variants start from an empty inductor/Triton cache (a user's first run) and report setup time.
Writes profile_<card>.json / .md under --out after every variant.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from pathlib import Path

import torch

from bench import models as M
from bench.steps import alphas_cumprod, cold_cache, count_flops, free, make_step, time_steps
from lora_studio.core.accel import fast_kernels as fk
from lora_studio.core.accel import graphs as fs
from bench.record import default_out, invoked
from bench.record import save as save_result

ROOT = Path(__file__).resolve().parents[1]

KINDS = [
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax")),
    ("conv", ("conv", "implicit", "fprop", "dgrad", "wgrad", "winograd", "cudnn")),
    ("gemm", ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas", "splitk")),
    ("triton", ("triton",)),
    ("norm", ("norm",)),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "reduce", "copy", "cat", "fill", "gelu", "silu",
                     "index", "where", "pow", "mul", "add")),
]


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def profile(step, data, steps=2, ops=False) -> dict:
    """GPU time by kernel kind and the top kernels; ``ops``: also the top ATen ops by the GPU time of the
    kernels they launch, with their input shapes (which add or copy it is)."""
    from torch.profiler import ProfilerActivity, profile as prof_ctx

    step(data)
    torch.cuda.synchronize()
    acts = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if ops else [])
    with prof_ctx(activities=acts, record_shapes=ops) as prof:
        for _ in range(steps):
            step(data)
        torch.cuda.synchronize()
    top_ops = []
    if ops:
        for e in prof.key_averages(group_by_input_shape=True):
            if getattr(e, "device_type", None) != torch.autograd.DeviceType.CPU:
                continue
            us = getattr(e, "self_device_time_total", 0.0) or 0.0
            if us > 0:
                top_ops.append((us / 1e3 / steps, e.count // steps, e.key, str(e.input_shapes)[:120]))
        top_ops.sort(reverse=True)
    by_kind: dict[str, float] = {}
    top = []
    for e in prof.key_averages():
        if getattr(e, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0.0)
        ms = us / 1e3 / steps
        k = kind_of(e.key)
        by_kind[k] = by_kind.get(k, 0.0) + ms
        top.append((ms, e.count // steps, k, e.key[:110]))
    top.sort(reverse=True)
    return {"ms_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "kernel_ms": sum(by_kind.values()), "kernels_per_step": sum(t[1] for t in top),
            "top": [{"ms": round(t[0], 3), "n": t[1], "kind": t[2], "name": t[3]} for t in top[:40]],
            "top_ops": [{"ms": round(t[0], 3), "n": t[1], "op": t[2], "shapes": t[3]} for t in top_ops[:60]]}


def build(spec, device, rank):
    unet, _ = M.build_unet(spec[0], device)
    params = M.add_lora(unet, rank=rank)
    return unet, params


def variant_options(name: str, best_sdpa: str | None) -> dict:
    if name.endswith("_ln"):  # any variant + Triton LayerNorms with the blocks' residual adds inside (attempt 17)
        return {**variant_options(name.removesuffix("_ln"), best_sdpa), "ln": True}
    if name.endswith("_geglu"):  # any variant + fast_geglu's fused GEGLU (attempt 16)
        return {**variant_options(name.removesuffix("_geglu"), best_sdpa), "geglu": True}
    if name.endswith("_gn"):  # any channels-last variant + fast_norm's GroupNorm on channels-last maps
        return {**variant_options(name.removesuffix("_gn"), best_sdpa), "gn": True}
    if name.endswith("_proj"):  # any variant + copy-free Transformer2DModel projections
        return {**variant_options(name.removesuffix("_proj"), best_sdpa), "proj": True}
    if name.endswith("_qkv") and name not in ("bf16_qkv", "bf16_blocks_qkv"):  # any variant + fused q/k/v
        return {**variant_options(name.removesuffix("_qkv"), best_sdpa), "qkv": True}
    o = {"sdpa": None, "lora": False, "pure": False, "compile": ()}
    if name in ("flash", "cudnn", "efficient"):
        o["sdpa"] = name
    elif name == "lora":
        o.update(lora=True, sdpa=best_sdpa)
    elif name == "ff":
        o.update(lora=True, sdpa=best_sdpa, compile=("FeedForward",))
    elif name == "blocks":
        o.update(lora=True, sdpa=best_sdpa, compile=("BasicTransformerBlock",))
    elif name == "blocks_res":
        o.update(lora=True, sdpa=best_sdpa, compile=("BasicTransformerBlock", "ResnetBlock2D"))
    elif name == "bf16":  # pure bf16: no autocast
        o.update(lora=True, pure=True, sdpa=best_sdpa)
    elif name == "bf16_blocks":
        o.update(lora=True, pure=True, sdpa=best_sdpa, compile=("BasicTransformerBlock",))
    elif name == "bf16_ff":
        o.update(lora=True, pure=True, sdpa=best_sdpa, compile=("FeedForward",))
    elif name == "bf16_cl":
        o.update(lora=True, pure=True, sdpa=best_sdpa, channels_last=True)
    elif name.startswith("bf16_") and name.removeprefix("bf16_").removesuffix("_cl") in ("blocks_res", "regions",
                                                                                        "unet"):
        # a fast_kernels.COMPILE_SETS entry (the whole UNet: minutes of compile, measured, not for the engine)
        o.update(lora=True, pure=True, sdpa=best_sdpa, channels_last=name.endswith("_cl"),
                 compile=fk.COMPILE_SETS[name.removeprefix("bf16_").removesuffix("_cl")])
    elif name in ("bf16_qkv", "bf16_blocks_qkv"):  # + fused self-attention q/k/v (fast_qkv)
        o.update(lora=True, pure=True, sdpa=best_sdpa, qkv=True,
                 compile=fk.COMPILE_SETS["blocks"] if "blocks" in name else ())
    elif name != "base":
        raise SystemExit(f"unknown variant {name}")
    return o


def run_variant(model, spec, batch, name, opts, device, args, acp):
    free(device)
    if opts["compile"]:
        torch._dynamo.reset()
        cold_cache(f"{model}_{name}")
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    unet, params = build(spec, device, args.rank)
    row = {"model": model, "batch": batch, "variant": name, **{k: (list(v) if isinstance(v, tuple) else v)
                                                               for k, v in opts.items()}}
    row["build_s"] = time.perf_counter() - t0
    if opts["lora"]:
        row["fast_lora_layers"] = fk.install_fast_lora(unet)
    if opts.get("qkv"):
        from lora_studio.core.accel.fast_qkv import install_fused_qkv

        row["fused_qkv"] = install_fused_qkv(unet)
    if opts.get("proj"):
        from lora_studio.core.accel.fast_proj import install_fast_proj

        row["fast_proj"] = install_fast_proj(unet)
    if opts.get("gn"):
        from lora_studio.core.accel.fast_norm import install_nhwc_group_norm

        row["nhwc_group_norms"] = install_nhwc_group_norm(unet)
    if opts.get("geglu"):
        from lora_studio.core.accel.fast_geglu import install_fast_geglu

        row["fast_geglu"] = install_fast_geglu(unet)
    if opts.get("ln"):
        from lora_studio.core.accel.fast_block import install_fast_block
        from lora_studio.core.accel.fast_layernorm import install_fast_layernorm

        row["fast_layernorms"] = install_fast_layernorm(unet)
        row["fast_blocks"] = install_fast_block(unet)
    if opts["compile"]:
        row["compiled_blocks"] = fk.compile_blocks(unet, opts["compile"], dynamic=False)  # as the engine
    data = M.make_batch(spec, batch, device, generator=torch.Generator().manual_seed(batch))
    opt = fs.capturable_adamw(params, lr=1e-4, weight_decay=1e-2, device=device)
    if opts.get("channels_last"):
        unet.to(memory_format=torch.channels_last)
    inner = make_step(unet, params, opt, acp=acp, autocast_cache=False, autocast=not opts["pure"],
                      channels_last=bool(opts.get("channels_last")))

    def step_fn(b):
        with fk.sdpa_context(opts["sdpa"]):
            return inner(b)

    warnings: list[str] = []
    step = fs.FastStep(step_fn, device=device, params=params, on_warning=warnings.append)
    try:
        t1 = time.perf_counter()
        loss = float(step(data))
        row["first_step_s"] = time.perf_counter() - t1
        row["setup_s"] = time.perf_counter() - t0
        row.update(time_steps(lambda: step(data), device, warmup=1, budget_s=args.budget, n_min=args.min_steps,
                              n_max=40))
        row["loss_first"] = loss
        row["captured"] = bool(step.graphs) and all(v is not None for v in step.graphs.values())
        row["warnings"] = warnings
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        if args.profile_variants and name in args.profile_variants:
            row["profile"] = profile(step_fn, data, ops=args.ops)
    except Exception as exc:  # noqa: BLE001 - record and go on to the next variant
        row["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
    finally:
        del step, inner, opt
        fk.uncompile_blocks(unet)
        del unet, params
        free(device)
    return row


def render(result) -> str:
    lines = [f"# Fast-step variants — {result['card']}, {result['date']}", "",
             "| model | batch | variant | sdpa | fast LoRA | pure bf16 | compiled | ms/step | vs base | % of 790 | setup s | "
             "peak GiB | captured | note |", "|" + "---|" * 14]
    for r in result["rows"]:
        base = next((x for x in result["rows"] if x["model"] == r["model"] and x["batch"] == r["batch"]
                     and x["variant"] == "base" and "ms" in x), None)
        vs = f"{base['ms'] / r['ms']:.2f}x" if base and "ms" in r else "-"
        fl = result["flops"].get(r["model"])
        pct = f"{100 * fl * r['batch'] / (r['ms'] / 1e3) / 1e12 / 790:.1f}" if fl and "ms" in r else "-"
        lines.append(f"| {r['model']} | {r['batch']} | {r['variant']} | {r.get('sdpa') or 'auto'} | "
                     f"{'yes' if r.get('lora') else 'no'} | {'yes' if r.get('pure') else 'no'} | {','.join(r.get('compile') or []) or '-'} | "
                     f"{r.get('ms', float('nan')):.1f} | {vs} | {pct} | {r.get('setup_s', float('nan')):.1f} | "
                     f"{r.get('peak_gib', float('nan')):.2f} | {r.get('captured')} | "
                     f"{(r.get('error') or '; '.join(r.get('warnings') or []))[:160]} |")
    for key, p in result["profiles"].items():
        lines += ["", f"## Kernel time of one step, {key} ({p['kernels_per_step']} kernels, "
                  f"{p['kernel_ms']:.1f} ms)", "", "| kind | ms |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in p["ms_by_kind"].items()]
        lines += ["", "| ms | n | kind | kernel |", "|---|---|---|---|"]
        lines += [f"| {t['ms']:.2f} | {t['n']} | {t['kind']} | `{t['name']}` |" for t in p["top"][:25]]
        if p.get("top_ops"):
            lines += ["", "| ms | n | ATen op | input shapes |", "|---|---|---|---|"]
            lines += [f"| {t['ms']:.2f} | {t['n']} | {t['op']} | `{t['shapes']}` |" for t in p["top_ops"][:40]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    invoked(__spec__.name, argv)  # the command line every result records
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sd15:8,sdxl:4")
    ap.add_argument("--variants", default="base,lora,bf16,bf16_ff,bf16_blocks")
    ap.add_argument("--profile-variants", default="", help="also profile these variants' kernels")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--ops", action="store_true", help="profiles also list the top ATen ops with input shapes")
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--min-steps", type=int, default=6)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--out", default=default_out())
    args = ap.parse_args(argv)
    args.profile_variants = [v for v in args.profile_variants.split(",") if v]
    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name(0)
    tag = "h100" if "H100" in card else "h200" if "H200" in card else "gpu"
    result = {"card": card, "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "torch": torch.__version__, "rows": [], "profiles": {}, "flops": {}}

    def save():
        save_result(out, f"profile_{tag}", result, render(result))

    acp = alphas_cumprod(device)
    for item in args.models.split(","):
        model, batch = item.split(":")
        batch = int(batch)
        spec = M.MODELS[model]
        if not args.no_profile:
            unet, params = build(spec, device, args.rank)
            opt = torch.optim.AdamW(params, lr=0.0)
            data1 = M.make_batch(spec, 1, device)
            result["flops"][model] = count_flops(lambda: make_step(unet, params, opt, acp=acp)(data1)) \
                if model not in result["flops"] else result["flops"][model]
            for p in params:
                p.grad = None
            opt = fs.capturable_adamw(params, lr=1e-4, weight_decay=1e-2, device=device)
            data = M.make_batch(spec, batch, device)
            result["profiles"][f"{model} b{batch} base"] = profile(
                make_step(unet, params, opt, acp=acp, autocast_cache=False), data)
            del unet, params, opt, data, data1
            free(device)
            save()
            print(json.dumps({k: v for k, v in result["profiles"][f"{model} b{batch} base"].items() if k != "top"}),
                  flush=True)
        best_sdpa, best_ms = None, float("inf")
        for name in args.variants.split(","):
            opts = variant_options(name, best_sdpa)
            row = run_variant(model, spec, batch, name, opts, device, args, acp)
            if name in ("base", "flash", "cudnn", "efficient") and row.get("ms", float("inf")) < best_ms:
                best_ms, best_sdpa = row["ms"], (None if name == "base" else name)
            result["rows"].append(row)
            if "profile" in row:
                result["profiles"][f"{model} b{batch} {name}"] = row.pop("profile")
            save()
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                              if k not in ("warnings",)}), flush=True)
    save()
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
