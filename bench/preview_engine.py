"""Preview latency through the app's own PreviewEngine, on full-size pipelines with random weights.

    python -m bench.preview_engine [--models sd15,sdxl] [--variants old,fp16,bf16-eager,bf16] [--tiny]

Builds full-size SD 1.5 / SDXL pipelines (UNet, VAE and CLIP text encoders at their real sizes, random
weights, the bundled CLIP tokenizer), writes two rank-16 LoRA files in diffusers format -- "a" with UNet
and text-encoder layers, "b" UNet only -- loads both into ``lora_studio.core.inference.engine.PreviewEngine``
(fused mode) and times slider release -> finished PIL image: ``set_weights`` then ``generate`` (20 Euler
steps, CFG 7.5). Two kinds of slider move: both sliders (a's text-encoder layers change, so the prompt is
encoded again) and b alone (the prompt embeddings come from the cache).
Target on an H100: SDXL 1024 <= 2.0 s, SD 1.5 512 <= 0.6 s.

Variants (one pipeline per dtype, the engine's switches flipped between rows):
  head        the engine file given by --old-engine (an earlier commit), fp16, on its own pipeline
  old         fp16, no CUDA graph, no prompt cache (this engine with its switches off; apply stays new)
  fp16        fp16 with graph and prompt cache (what a card without bf16 gets)
  bf16-eager  bf16 with prompt cache, no graph
  bf16        bf16 with graph and prompt cache (the engine's default on an H100)
  bf16-lowmem bf16 as above in low-memory mode (the default on small cards: text encoders and weight
              snapshots in host memory, tiled VAE decode), on its own pipeline
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import models as M
from bench.record import default_out, invoked
from bench.record import save as save_result

ROOT = Path(__file__).resolve().parents[1]

CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                 num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)


def _on(device, dtype, fn):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return fn()
    finally:
        torch.set_default_dtype(old)


def build_pipeline(name, device, dtype, tiny):
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lora_studio.core.models.loader import clip_tokenizer

    if tiny:
        from lora_studio.core.demo.build import build_pipeline as demo_pipeline

        return demo_pipeline("demo" if name == "sd15" else "demo-xl").to(device, dtype)
    spec = M.MODELS[name]
    unet, _ = M.build_unet(spec[0], device, dtype)
    vae = _on(device, dtype, lambda: AutoencoderKL(**M.VAE))
    sched = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1)
    te1 = _on(device, dtype, lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L)))
    if name == "sd15":
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=te1, tokenizer=clip_tokenizer(), unet=unet,
                                       scheduler=sched, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    else:
        te2 = _on(device, dtype, lambda: CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)))
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=clip_tokenizer(),
                                         tokenizer_2=clip_tokenizer("!"), unet=unet, scheduler=sched)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if m is not None:
            m.requires_grad_(False)
    return pipe


def write_lora(pipe, folder: Path, seed: int, rank: int = 16, text_encoders: bool = False) -> Path:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name="tmp")
    sd = get_peft_model_state_dict(unet, adapter_name="tmp")
    unet.delete_adapters("tmp")
    layers = {"unet_lora_layers": convert_state_dict_to_diffusers(
        {k: (v.float() * 0.02).cpu().contiguous() for k, v in sd.items()})}
    for comp in ("text_encoder", "text_encoder_2") if text_encoders else ():
        model = getattr(pipe, comp, None)
        if model is None:
            continue
        sd = {}  # peft's layout (A: rank x in, B: out x rank) for every attention projection
        for mod_name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and mod_name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj",
                                                                                  "out_proj"):
                sd[f"{mod_name}.lora_A.weight"] = torch.randn(rank, mod.in_features) * 0.02
                sd[f"{mod_name}.lora_B.weight"] = torch.randn(mod.out_features, rank) * 0.02
        layers[f"{comp}_lora_layers"] = convert_state_dict_to_diffusers(sd)
    folder.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(str(folder), **layers)
    return folder / "pytorch_lora_weights.safetensors"


VARIANTS = {  # name -> (dtype, CUDA graph, prompt cache); "head": the engine file given by --old-engine
    "head": (torch.float16, None, None),
    "old": (torch.float16, False, False),
    "fp16": (torch.float16, True, True),
    "bf16-eager": (torch.bfloat16, False, True),
    "bf16": (torch.bfloat16, True, True),
    "bf16-lowmem": (torch.bfloat16, True, True),  # low_memory=True: text encoders and snapshots on the host
    "bf16-lowmem-int8": (torch.bfloat16, True, True),  # + int8_unet=True: the UNet's Linear weights in 8 bits
}


def main(argv=None) -> int:
    invoked(__spec__.name, argv)  # the command line every result records
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sd15,sdxl")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--variants", default="old,fp16,bf16-eager,bf16")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=default_out())
    ap.add_argument("--cudnn-benchmark", choices=("off", "on"), default="off",
                    help="off (default): as the app previews (nothing sets it); on: cuDNN autotunes each "
                         "convolution on first use (slow first image, as after training in the same process)")
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    ap.add_argument("--old-engine", default=None,
                    help="an earlier engine.py (e.g. from `git show REV:lora_studio/core/inference/engine.py`): "
                         "variant 'head' runs its PreviewEngine in the same run, on its own fp16 pipeline")
    args = ap.parse_args(argv)
    from lora_studio.core.inference.engine import PreviewEngine, PreviewRequest

    old_engine = None
    if args.old_engine:
        import importlib.util

        spec = importlib.util.spec_from_file_location("old_engine", args.old_engine)
        old_engine = sys.modules["old_engine"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old_engine)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    tiny = args.tiny or not cuda
    if cuda:
        torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
    result = {"card": torch.cuda.get_device_name(0) if cuda else "cpu", "tiny": tiny, "engine": "PreviewEngine",
              "torch": torch.__version__, "cudnn_benchmark": args.cudnn_benchmark, "tag": args.tag,
              "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rows": []}
    both = [(0.3, 1.0), (1.0, 0.0), (0.6, 0.6), (0.2, 0.9), (0.9, 0.4)]
    b_only = [0.2, 0.9, 0.5, 1.2, 0.7]
    variants = [v for v in args.variants.split(",") if v and (v != "head" or old_engine is not None)]
    for name in args.models.split(","):
        size = 64 if tiny else M.MODELS[name][1]
        req = PreviewRequest(prompt="a photo of a red circle", negative="blurry", steps=args.steps, guidance=7.5,
                             width=size, height=size, scheduler="euler")
        groups = []  # (dtype, the old engine?, low memory?, 8-bit UNet?) -> one pipeline each

        def group_of(v):
            return (VARIANTS[v][0] if cuda else torch.float32, v == "head", "lowmem" in v, v.endswith("int8"))

        for v in variants:
            if group_of(v) not in groups:
                groups.append(group_of(v))
        for dtype, head, low, int8 in groups:
            todo = [v for v in variants if group_of(v) == (dtype, head, low, int8)]
            base_alloc = torch.cuda.memory_allocated() if cuda else 0  # what earlier groups left behind
            t0 = time.perf_counter()
            pipe = build_pipeline(name, device, dtype, tiny)
            build_s = time.perf_counter() - t0
            if int8 and cuda:  # as the app loads it: into system memory, each layer quantised onto the GPU
                pipe.to("cpu")
                torch.cuda.empty_cache()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with tempfile.TemporaryDirectory() as tmp:
                paths = [write_lora(pipe, Path(tmp, n), seed, text_encoders=te)
                         for n, seed, te in (("a", 1, True), ("b", 2, False))]
                kw = {} if head else {"low_memory": low, "int8_unet": int8}
                engine = (old_engine.PreviewEngine if head else PreviewEngine)(pipe=pipe, device=device, dtype=dtype,
                                                                                 **kw)
                engine.add_lora(paths[0], "a", 0.8)
                engine.add_lora(paths[1], "b", 0.5)
            # engine set-up and LoRA loading (8 bits: one 16-bit layer on the GPU at a time)
            setup_peak = (torch.cuda.max_memory_allocated() - base_alloc) / 2**30 if cuda else None
            for variant in todo:
                _, graph, cache = VARIANTS[variant]
                if not head:
                    engine.use_graph(graph)
                    engine.prompt_cache = cache
                    engine._prompts.clear()  # each variant starts cold, as a fresh engine would
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                engine.set_weights({"a": 0.8, "b": 0.5})
                engine.generate(req)  # first image: snapshots, cuDNN autotune, graph capture
                first_s = time.perf_counter() - t0
                timed = {"both": [], "b_only": []}
                applies, layers, encodes = [], [], []
                moves = [("both", {"a": w1, "b": w2}) for w1, w2 in both[: args.repeats]]
                moves += [("b_only", {"b": w}) for w in b_only[: args.repeats]]
                for kind, weights in moves:
                    if cuda:
                        torch.cuda.synchronize()
                    n_enc = getattr(engine, "prompt_encodes", 0)
                    t0 = time.perf_counter()  # slider released
                    engine.set_weights(weights)
                    image = engine.generate(req)
                    timed[kind].append(time.perf_counter() - t0)
                    applies.append(engine.last_apply_s)
                    layers.append(getattr(engine, "last_apply_layers", None))
                    encodes.append(getattr(engine, "prompt_encodes", 0) - n_enc)
                graphed = getattr(engine, "graphed", None)
                row = {"model": name, "variant": variant, "image": size, "dtype": str(dtype), "steps": args.steps,
                       "graph": graph, "prompt_cache": cache, "engine_file": args.old_engine if head else None,
                       "release_to_image_s": statistics.median(timed["both"]), "all_s": timed["both"],
                       "b_only_s": statistics.median(timed["b_only"]), "b_only_all_s": timed["b_only"],
                       "apply_weights_s": statistics.median(applies), "apply_layers": layers,
                       "prompt_encodes_per_move": encodes, "first_image_s": first_s, "build_s": build_s,
                       "image_size": list(image.size),
                       "graph_replays": graphed.replays if graphed else None,
                       "graph_capture_s": graphed.capture_seconds if graphed else None,
                       # this group's own peak: its pipeline, adapters, snapshots, graphs and activations
                       "peak_gib": (torch.cuda.max_memory_allocated() - base_alloc) / 2**30 if cuda else None,
                       "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
                       "low_memory": getattr(engine, "low_memory", False),
                       "int8_unet": getattr(engine, "int8_unet", False), "setup_peak_gib": setup_peak}
                print(json.dumps(row), flush=True)
                result["rows"].append(row)
                save(result, Path(args.out), tiny, cuda)
            if not head:
                engine.use_graph(False)
            del engine, pipe, graphed  # a graph keeps its UNet (and the whole group's memory) alive
            if cuda:
                torch.cuda.empty_cache()
    print(render(result))
    return 0


def save(result, out: Path, tiny: bool, cuda: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tag = ("tiny_" if tiny else "") + ("h100" if "H100" in result["card"] else "gpu" if cuda else "cpu")
    tag += result.get("tag") or ""
    save_result(out, f"preview_engine_{tag}", result, render(result))


def render(result) -> str:
    lines = [f"# Preview latency, PreviewEngine — {result['card']}, {result['date']}", "",
             "Slider release -> PIL image: set_weights + generate, 20 Euler steps, CFG 7.5, two rank-16 LoRAs "
             "fused (a: UNet + text encoders, b: UNet only). 'both': both sliders moved (prompt encoded again); "
             "'b only': the UNet-only slider (cached prompt). Median of the moves. Variants: see "
             "bench/preview_engine.py. cuDNN benchmark: " + str(result.get("cudnn_benchmark", "on")) + ".", "",
             "| model | size | variant | dtype | graph | prompt cache | both s | b only s | apply s | "
             "first image s | peak GiB (allocated / reserved) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "-"
        if r.get("peak_reserved_gib") is not None:
            peak += f" / {r['peak_reserved_gib']:.1f}"
        lines.append(f"| {r['model']} | {r['image']} | {r.get('variant', 'engine')} | {r['dtype']} | "
                     f"{'yes' if r.get('graph') else 'no'} | {'yes' if r.get('prompt_cache') else 'no'} | "
                     f"{r['release_to_image_s']:.3f} | {r.get('b_only_s', float('nan')):.3f} | "
                     f"{r['apply_weights_s']:.3f} | {r['first_image_s']:.2f} | {peak} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
