"""Preview latency through the app's own PreviewEngine, on full-size pipelines with random weights.

    python bench/preview_engine.py [--models sd15,sdxl] [--tiny]

Builds full-size SD 1.5 / SDXL pipelines (UNet, VAE and CLIP text encoders at their real sizes, random
weights, the bundled CLIP tokenizer), writes two rank-16 LoRA files in diffusers format, loads both into
``lora_studio.core.inference.engine.PreviewEngine`` (fused mode, its default dtype) and times
slider release -> finished PIL image: ``set_weights`` then ``generate`` (20 Euler steps, CFG 7.5),
both weights changed each time. Target on an H100: SDXL 1024 <= 2.0 s, SD 1.5 512 <= 0.6 s.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench import models as M  # noqa: E402

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


def write_lora(pipe, folder: Path, seed: int, rank: int = 16) -> Path:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name="tmp")
    sd = get_peft_model_state_dict(unet, adapter_name="tmp")
    sd = {k: (v.float() * 0.02).cpu().contiguous() for k, v in sd.items()}
    unet.delete_adapters("tmp")
    folder.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(str(folder), unet_lora_layers=convert_state_dict_to_diffusers(sd))
    return folder / "pytorch_lora_weights.safetensors"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sd15,sdxl")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--variants", default="engine,engine+graphed,engine-bf16+graphed")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    from lora_studio.core.inference.engine import PreviewEngine, PreviewRequest

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    tiny = args.tiny or not cuda
    if cuda:
        torch.backends.cudnn.benchmark = True
    result = {"card": torch.cuda.get_device_name(0) if cuda else "cpu", "tiny": tiny, "engine": "PreviewEngine",
              "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rows": []}
    sliders = [(0.3, 1.0), (1.0, 0.0), (0.6, 0.6), (0.2, 0.9), (0.9, 0.4)]
    from lora_studio.core.inference import engine as E
    from lora_studio.core.training.fast_step import GraphedForward

    variants = args.variants.split(",")
    for name in args.models.split(","):
        size = 64 if tiny else M.MODELS[name][1]
        req = PreviewRequest(prompt="a photo of a red circle", negative="blurry", steps=args.steps, guidance=7.5,
                             width=size, height=size, scheduler="euler")
        for dtype_name in ("default", "bf16"):
            todo = [v for v in variants if ("bf16" in v) == (dtype_name == "bf16")]
            if not todo:
                continue
            dtype = E._default_device_dtype(device, None)[1] if dtype_name == "default" else torch.bfloat16
            t0 = time.perf_counter()
            pipe = build_pipeline(name, device, dtype, tiny)
            build_s = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                paths = [write_lora(pipe, Path(tmp, n), seed) for n, seed in (("a", 1), ("b", 2))]
                engine = PreviewEngine(pipe=pipe, device=device, dtype=dtype)
                engine.add_lora(paths[0], "a", 0.8)
                engine.add_lora(paths[1], "b", 0.5)
            for variant in todo:
                graphed = GraphedForward(pipe.unet).install() if "graphed" in variant and cuda else None
                t0 = time.perf_counter()
                engine.generate(req)  # first image: snapshots, cuDNN autotune, graph capture
                first_s = time.perf_counter() - t0
                totals, applies = [], []
                for w1, w2 in sliders[: args.repeats]:
                    if cuda:
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()  # slider released
                    engine.set_weights({"a": w1, "b": w2})
                    image = engine.generate(req)
                    totals.append(time.perf_counter() - t0)
                    applies.append(engine.last_apply_s)
                row = {"model": name, "variant": variant, "image": size, "dtype": str(dtype), "steps": args.steps,
                       "release_to_image_s": statistics.median(totals), "all_s": totals,
                       "apply_weights_s": statistics.median(applies), "first_image_s": first_s, "build_s": build_s,
                       "image_size": list(image.size),
                       "graph_replays": graphed.replays if graphed else None}
                if graphed is not None:
                    graphed.uninstall()
                print(json.dumps(row), flush=True)
                result["rows"].append(row)
                save(result, Path(args.out), tiny, cuda)
            del engine, pipe
            if cuda:
                torch.cuda.empty_cache()
    print(render(result))
    return 0


def save(result, out: Path, tiny: bool, cuda: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tag = ("tiny_" if tiny else "") + ("h100" if "H100" in result["card"] else "gpu" if cuda else "cpu")
    (out / f"preview_engine_{tag}.json").write_text(json.dumps(result, indent=1))
    (out / f"preview_engine_{tag}.md").write_text(render(result))


def render(result) -> str:
    lines = [f"# Preview latency, PreviewEngine — {result['card']}, {result['date']}", "",
             "Slider release -> PIL image: set_weights + generate, 20 Euler steps, CFG 7.5, two rank-16 LoRAs "
             "(fused). 'graphed': fast_step.GraphedForward installed on pipe.unet. Median of the slider moves.", "",
             "| model | size | variant | dtype | release->image s | apply (fuse) s | first image s |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['image']} | {r.get('variant', 'engine')} | {r['dtype']} | "
                     f"{r['release_to_image_s']:.3f} | {r['apply_weights_s']:.3f} | {r['first_image_s']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
