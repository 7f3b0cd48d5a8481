"""Preview latency: slider release -> finished image, 20 Euler steps with CFG, two LoRAs.

    python bench/preview.py [--models sd15,sdxl] [--tiny]

A STAND-IN for the app's PreviewEngine, built from the same parts (diffusers UNet + peft adapters,
diffusers' fuse_lora, Euler, the full-size VAE decoder), full-size with random weights and the prompt's
embeddings already cached (a slider move does not change the prompt). Variants:
  live     both adapters run on every step (no fusing)
  fused    unfuse + set_adapters(weights) + fuse_lora on release, then plain UNet steps
  graphed  as fused, with accel.graphs.GraphedForward: the UNet forward replayed from a CUDA graph captured
           once per image size; fusing writes the weights in place, so the graph stays valid
Each timed sample changes both slider weights; the clock stops when the uint8 image is on the host.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench import models as M  # noqa: E402
from lora_studio.core.accel.graphs import GraphedForward  # noqa: E402


def build(name, spec, device, dtype, tiny):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler
    from peft import LoraConfig

    unet, _ = M.build_unet(spec[0], device, dtype)
    vae_cfg = dict(M.VAE)
    if tiny:
        from lora_studio.core.demo import build as demo

        vae = demo.make_vae().to(device, dtype)
    else:
        old = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        with torch.device(device):
            vae = AutoencoderKL(**vae_cfg)
        torch.set_default_dtype(old)
    vae.requires_grad_(False)
    torch.manual_seed(0)
    for adapter in ("a", "b"):
        unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name=adapter)
    for n, p in unet.named_parameters():
        if "lora_" in n:
            p.data = (p.data.float() * 0.01).to(dtype)
    unet.set_adapters(["a", "b"], [0.8, 0.5])
    sched = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1)
    return unet, vae, sched


def generate(unet, vae, sched, cond, *, steps, guidance, image, generator, forward):
    sched.set_timesteps(steps, device=cond["ehs"].device)
    latent = image // 8
    x = torch.randn(1, 4, latent, latent, generator=generator).to(cond["ehs"].device) * sched.init_noise_sigma
    x = x.to(cond["ehs"].dtype)
    for t in sched.timesteps:
        inp = sched.scale_model_input(torch.cat([x, x]), t)
        pred = forward(sample=inp, t=t.reshape(1).expand(2).float(), **cond)
        uncond, text = pred.chunk(2)
        pred = uncond + guidance * (text - uncond)
        x = sched.step(pred, t, x).prev_sample
    img = vae.decode(x / 0.13025).sample
    return ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sd15,sdxl")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="live,fused,graphed")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    tiny = args.tiny or not cuda
    dtype = torch.bfloat16 if cuda else torch.float32
    specs = M.tiny_models() if tiny else M.MODELS
    if cuda:
        torch.backends.cudnn.benchmark = True
    result = {"card": torch.cuda.get_device_name(0) if cuda else "cpu", "tiny": tiny, "stand_in": True,
              "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rows": []}
    sliders = [(0.8, 0.5), (0.3, 1.0), (1.0, 0.0), (0.6, 0.6), (0.2, 0.9)]
    for name in args.models.split(","):
        spec = specs[name]
        unet, vae, sched = build(name, spec, device, dtype, tiny)
        _, image, tokens, width, pooled = spec
        g = torch.Generator().manual_seed(0)
        cond = {"ehs": torch.randn(2, tokens, width, generator=g).to(device, dtype)}
        if pooled is not None:
            cond["text_embeds"] = torch.randn(2, pooled, generator=g).to(device, dtype)
            cond["time_ids"] = torch.tensor([[image, image, 0, 0, image, image]] * 2, device=device).to(dtype)

        def eager(**kw):
            added = {"text_embeds": kw["text_embeds"], "time_ids": kw["time_ids"]} if "text_embeds" in kw else None
            return unet(kw["sample"], kw["t"], kw["ehs"], added_cond_kwargs=added).sample

        for variant in args.variants.split(","):
            if variant == "graphed" and not cuda:
                continue
            forward, capture_s = eager, None
            fused = False
            with torch.no_grad():
                if variant in ("fused", "graphed"):
                    unet.fuse_lora(adapter_names=["a", "b"])
                    fused = True
                graphed = GraphedForward(unet).install() if variant == "graphed" else None
                # warm-up image (cuDNN autotune, first VAE decode; the graph's capture)
                generate(unet, vae, sched, cond, steps=args.steps, guidance=7.0, image=image, generator=g,
                         forward=forward)
                if graphed is not None:
                    capture_s = graphed.capture_seconds
                totals, applies = [], []
                for w1, w2 in sliders[: args.repeats]:
                    if cuda:
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()  # slider released
                    if fused:
                        unet.unfuse_lora()
                    unet.set_adapters(["a", "b"], [w1, w2])
                    if fused:
                        unet.fuse_lora(adapter_names=["a", "b"])
                    if cuda:
                        torch.cuda.synchronize()
                    applies.append(time.perf_counter() - t0)
                    generate(unet, vae, sched, cond, steps=args.steps, guidance=7.0, image=image, generator=g,
                             forward=forward)
                    totals.append(time.perf_counter() - t0)
                if fused:
                    unet.unfuse_lora()
                if graphed is not None:
                    graphed.uninstall()
            row = {"model": name, "variant": variant, "image": image, "steps": args.steps,
                   "release_to_image_s": statistics.median(totals), "all_s": totals,
                   "apply_weights_s": statistics.median(applies), "graph_capture_s": capture_s}
            print(json.dumps(row), flush=True)
            result["rows"].append(row)
            del forward
        del unet, vae
        if cuda:
            torch.cuda.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = ("tiny_" if tiny else "") + ("h100" if "H100" in result["card"] else "gpu" if cuda else "cpu")
    (out / f"preview_{tag}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Preview latency (stand-in) — {result['card']}, {result['date']}", "",
             "Slider release -> uint8 image on host; 20 Euler steps, CFG 7, two rank-16 LoRAs; median of "
             f"{args.repeats} slider moves.", "",
             "| model | size | variant | release->image s | apply weights s | graph capture s (once) |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cap = "-" if r["graph_capture_s"] is None else f"{r['graph_capture_s']:.2f}"
        lines.append(f"| {r['model']} | {r['image']} | {r['variant']} | {r['release_to_image_s']:.3f} | "
                     f"{r['apply_weights_s']:.3f} | {cap} |")
    (out / f"preview_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
