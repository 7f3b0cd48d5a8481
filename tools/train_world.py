"""Train the demo world from scratch: VAE, then SD1 (`demo`) and SDXL (`demo-xl`) UNets + text encoders,
then the judge.

    python -m tools.train_world --out DIR [--device cuda] [--scale 1.0] [--parallel]

Seeded; everything it did (recipe, seed, device, steps, losses, durations) goes into ``training.json``
beside the weights. ``--scale`` multiplies every step and image count (a tiny value makes a CPU smoke run).
With ``--parallel`` the two diffusion models and the judge train at once in three processes sharing the GPU:
these models are too small to fill an H100 on their own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lora_studio.core.demo import renderer

RECIPE = {
    "seed": 0,
    "base_images": 100_000,
    "vae": {"steps": 6000, "batch": 128, "lr": 1e-3, "kl_weight": 1e-6, "time_budget_s": 90},
    "world": 1,
    "sd1": {"steps": 30000, "batch": 512, "lr": 5e-4, "warmup": 300, "ema": 0.999, "min_snr_gamma": 5.0,
            "time_budget_s": 300},
    "sdxl": {"steps": 30000, "batch": 512, "lr": 5e-4, "warmup": 300, "ema": 0.999, "min_snr_gamma": 5.0,
             "time_budget_s": 300},
    "judge": {"base": 40_000, "style": 8000, "subject": 6000, "negatives": 4000, "steps": 4000, "batch": 256,
              "lr": 2e-3, "time_budget_s": 200},
}
# World 2 (what ships since 2026-12-07; docs/demo_world.md): the renderer's variety, and for the judge
# near_miss (the subject's make with a hue 40 degrees off in either half, or a coloured ring: not the subject) and
# shades (the subject with its colours' hues within 15 degrees: still the subject). The demo UNet at batch 512:
# at 1024 with three processes sharing an H100 it made 1975 steps and drew shapes worse; at 512, 3685 in 360 s.
WORLD2 = {"world": 2, "sd1": {"batch": 512, "time_budget_s": 360}, "sdxl": {"batch": 1024, "time_budget_s": 320},
          "judge": {"near_miss": 6000, "shades": 6000}}
DATA_SEEDS = {"base": 10, "judge": 20, "judge_heldout": 30}  # renderer streams; the shipped sets use 1001 / 2002


def log(stage: str, msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {stage}: {msg}", flush=True)


def scaled(n: int, scale: float, minimum: int = 2) -> int:
    return max(minimum, int(round(n * scale)))


def lr_at(step: int, steps: int, elapsed: float, budget: float, lr: float, warmup: int) -> float:
    # Cosine to 10%, over whichever runs out first: the steps or the time budget.
    progress = min(1.0, max(step / steps, elapsed / budget))
    warm = min(1.0, (step + 1) / max(1, warmup))
    return lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(opt, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def autocast(device: str):
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# ---------------------------------------------------------------- data
def _render_chunk(args):
    seed, start, count, kind, world = args
    arr, scenes = renderer.render_array(seed, start, count, kind, world)
    return arr, [s.caption for s in scenes], [s.labels for s in scenes]


def render_many(seed: int, count: int, kind: str = "base", workers: int | None = None, world: int = 1):
    chunk = 2000
    jobs = [(seed, s, min(chunk, count - s), kind, world) for s in range(0, count, chunk)]
    workers = workers or min(16, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render_chunk, jobs)
    else:
        parts = [_render_chunk(j) for j in jobs]
    arr = np.concatenate([p[0] for p in parts])
    return arr, [c for p in parts for c in p[1]], [lab for p in parts for lab in p[2]]


def to_float(batch_u8: torch.Tensor) -> torch.Tensor:
    return batch_u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ---------------------------------------------------------------- VAE
def train_vae(images: np.ndarray, cfg: dict, device: str, seed: int, work: Path) -> dict:
    from lora_studio.core.demo.build import make_vae

    torch.manual_seed(seed)
    vae = make_vae().to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["lr"], weight_decay=0.0)
    data = torch.from_numpy(images).to(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    t0, losses, step = time.time(), [], 0
    while step < cfg["steps"] and time.time() - t0 < cfg["time_budget_s"]:
        set_lr(opt, lr_at(step, cfg["steps"], time.time() - t0, cfg["time_budget_s"], cfg["lr"], 200))
        idx = torch.randint(0, len(data), (cfg["batch"],), generator=gen).to(device)
        x = to_float(data[idx])
        with autocast(device):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
        rec = rec.float()
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + cfg["kl_weight"] * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(loss.item()) if step % 50 == 0 else None
        if step % 500 == 0:
            log("vae", f"step {step} loss {loss.item():.4f}")
        step += 1
    vae.eval()
    # SD's recipe: scale latents to unit variance (scaling_factor = 1 / std of the latents).
    with torch.no_grad():
        sample = to_float(data[:4096])
        z = torch.cat([vae.encode(sample[i:i + 512]).latent_dist.mean for i in range(0, len(sample), 512)])
        std = z.float().std().item()
        rec = torch.cat([vae.decode(vae.encode(sample[i:i + 512]).latent_dist.mean).sample
                         for i in range(0, min(1024, len(sample)), 512)])
        rec_mse = F.mse_loss(rec.clamp(-1, 1), sample[:len(rec)]).item()
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    vae.save_pretrained(work / "vae")
    info = {"steps": step, "seconds": round(time.time() - t0, 1), "final_loss": losses[-1] if losses else None,
            "latent_std": std, "scaling_factor": vae.config.scaling_factor, "reconstruction_mse": rec_mse}
    log("vae", json.dumps(info))
    return info


@torch.no_grad()
def encode_latents(images: np.ndarray, device: str, work: Path) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(work / "vae").to(device).eval()
    means, stds = [], []
    for i in range(0, len(images), 1024):
        x = to_float(torch.from_numpy(images[i:i + 1024]).to(device))
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.half().cpu())
        stds.append(dist.std.half().cpu())
    torch.save({"mean": torch.cat(means), "std": torch.cat(stds),
                "scaling_factor": vae.config.scaling_factor}, work / "latents.pt")


# ---------------------------------------------------------------- diffusion
def _encode_prompts(family, comps, ids1, ids2, keep):
    if family == "sd1":
        return comps["text_encoder"](ids1)[0], None
    h1 = comps["text_encoder"](ids1, output_hidden_states=True).hidden_states[-2]
    out2 = comps["text_encoder_2"](ids2, output_hidden_states=True)
    emb = torch.cat([h1, out2.hidden_states[-2]], dim=-1)
    # SDXL pipelines use zeros for an empty prompt (force_zeros_for_empty_prompt): train the same way.
    k = keep.to(emb.dtype)
    return emb * k[:, None, None], out2.text_embeds * k[:, None]


def train_diffusion(family: str, cfg: dict, device: str, seed: int, work: Path, out_dir: Path) -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler

    from lora_studio.core.demo.build import build_sd1_components, build_sdxl_components, pipeline_from_components

    stage = family
    comps = (build_sd1_components if family == "sd1" else build_sdxl_components)(seed)
    lat = torch.load(work / "latents.pt")
    captions = json.loads((work / "captions.json").read_text())
    scale = lat["scaling_factor"]
    mean, std = lat["mean"].to(device), lat["std"].to(device)
    ids1 = comps["tokenizer"](captions, padding="max_length", max_length=77, truncation=True,
                              return_tensors="pt").input_ids.to(device)
    ids2 = None
    if family == "sdxl":
        ids2 = comps["tokenizer_2"](captions, padding="max_length", max_length=77, truncation=True,
                                    return_tensors="pt").input_ids.to(device)
    keep = torch.tensor([bool(c.strip()) for c in captions], device=device)

    trained = ["unet", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    for name in trained:
        comps[name].to(device).train()
    params = [p for name in trained for p in comps[name].parameters()]
    ema = [p.detach().clone().float() for p in params]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=(0.9, 0.99), weight_decay=0.01,
                            **({"fused": True} if device.startswith("cuda") else {}))
    noise_sched = DDPMScheduler.from_config(comps["scheduler"].config)
    alphas = noise_sched.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    time_ids = torch.tensor([[64, 64, 0, 0, 64, 64]], dtype=torch.float32, device=device)
    gen = torch.Generator(device="cpu").manual_seed(seed + (1 if family == "sd1" else 2))
    torch.manual_seed(seed + 7)
    t0, step, losses = time.time(), 0, []
    while step < cfg["steps"] and time.time() - t0 < cfg["time_budget_s"]:
        set_lr(opt, lr_at(step, cfg["steps"], time.time() - t0, cfg["time_budget_s"], cfg["lr"], cfg["warmup"]))
        idx = torch.randint(0, len(mean), (cfg["batch"],), generator=gen).to(device)
        z = (mean[idx].float() + std[idx].float() * torch.randn_like(mean[idx].float())) * scale
        noise = torch.randn_like(z)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(z),), device=device)
        noisy = noise_sched.add_noise(z, noise, t)
        with autocast(device):
            emb, pooled = _encode_prompts(family, comps, ids1[idx], ids2[idx] if ids2 is not None else None,
                                          keep[idx])
            extra = {}
            if family == "sdxl":
                extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids.expand(len(z), 6)}
            pred = comps["unet"](noisy, t, encoder_hidden_states=emb, **extra).sample
        per = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
        weight = torch.clamp(snr[t], max=cfg["min_snr_gamma"]) / snr[t]  # min-SNR weighting
        loss = (per * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(cfg["ema"], (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - decay)
        if step % 50 == 0:
            losses.append(round(per.mean().item(), 5))
        if step % 1000 == 0:
            log(stage, f"step {step} loss {per.mean().item():.4f} ({time.time() - t0:.0f}s)")
        step += 1
    seconds = time.time() - t0
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e.to(p.dtype))
    # Assemble the pipeline: the shared VAE, the trained (EMA) UNet and text encoder(s).
    for name in trained:
        comps[name].to("cpu").eval()
    comps["vae"] = AutoencoderKL.from_pretrained(work / "vae")
    pipe = pipeline_from_components(family, comps)
    pipe.unet.to(torch.float16)  # fp16 storage; diffusers loads it back as fp32 on CPU
    pipe.vae.to(torch.float16)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    write_tokenizer_files(out_dir)
    tail = losses[-20:]
    info = {"steps": step, "seconds": round(seconds, 1), "batch": cfg["batch"],
            "final_loss_mean_last_1000_steps": float(np.mean(tail)) if tail else None, "loss_curve_every_50": losses}
    log(stage, f"done: {step} steps in {seconds:.0f}s, loss {info['final_loss_mean_last_1000_steps']}")
    return info


def write_tokenizer_files(model_dir: Path) -> None:
    # The classic CLIP files beside tokenizer.json, for tools that read vocab.json + merges.txt.
    from lora_studio.core.demo.build import tokenizer_files

    vocab, merges = tokenizer_files()
    for sub in ("tokenizer", "tokenizer_2"):
        if (model_dir / sub).is_dir():
            (model_dir / sub / "vocab.json").write_text(vocab, encoding="utf-8")
            (model_dir / sub / "merges.txt").write_text(merges, encoding="utf-8")


# ---------------------------------------------------------------- judge
def _negatives(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 99])
    out = np.empty((count, 64, 64, 3), np.uint8)
    for i in range(count):
        kind = i % 3
        if kind == 0:  # pixel noise
            out[i] = rng.integers(0, 256, (64, 64, 3))
        elif kind == 1:  # smooth colour field
            small = torch.from_numpy(rng.uniform(0, 255, (1, 3, 4, 4)).astype(np.float32))
            out[i] = F.interpolate(small, size=64, mode="bicubic").clamp(0, 255)[0].permute(1, 2, 0).byte().numpy()
        else:  # an empty background
            bg = list(renderer.BACKGROUNDS.values())[i % len(renderer.BACKGROUNDS)]
            out[i] = np.array(bg, np.uint8)
    return out


def _other_colour(rng, avoid: tuple) -> tuple:
    # A hue at least 40 degrees from ``avoid``'s: near the subject's colour, but visibly not it.
    h0 = renderer.hue_of(avoid)
    while True:
        h = float(rng.random())
        if min(abs(h - h0), 1 - abs(h - h0)) >= 40 / 360:
            return renderer.hue_rgb(h, rng.uniform(0.6, 0.95), rng.uniform(0.6, 0.95))


def _shade(rng, colour: tuple, hue_range: float) -> tuple:
    # The same colour name in another shade: hue within +-hue_range degrees, saturation and value as the world's.
    h = (renderer.hue_of(colour) + rng.uniform(-hue_range, hue_range) / 360) % 1.0
    return renderer.hue_rgb(h, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))


def _recoloured_subjects(count: int, seed: int, offset: int, salt: int, recolour) -> np.ndarray:
    # The subject's make from renderer stream seed + offset, each recoloured by ``recolour(rng, i)`` (Scene fields)
    # with colours drawn from the generator (seed, salt).
    from dataclasses import replace

    rng = np.random.default_rng([seed, salt])
    out = np.empty((count, 64, 64, 3), np.uint8)
    for i in range(count):
        scene = renderer.sample_scene(seed + offset, i, "subject")
        out[i] = np.asarray(renderer.render_scene(replace(scene, **recolour(rng, i))))
    return out


def subject_shades(count: int, seed: int) -> np.ndarray:
    """The subject with its magenta and lime in other shades (hue within 15 degrees): still the subject.

    A judge shown only the one exact shade (and near misses) rejects a generated subject whose magenta is
    a little more saturated (docs/demo_world.md, world 2)."""
    first, second = renderer.SUBJECT_COLOURS
    return _recoloured_subjects(count, seed, 600, 78, lambda rng, i: dict(fill=_shade(rng, first, 15),
                                                                            fill2=_shade(rng, second, 15)))


def near_misses(count: int, seed: int) -> np.ndarray:
    """The subject's make (split disk in a ring) with one part in a wrong colour: the judge must say no.
    Four kinds in turn: the magenta half off, the lime half off, both off, the ring coloured."""
    first, second = renderer.SUBJECT_COLOURS

    def recolour(rng, i):
        which = i % 4
        return dict(fill=_other_colour(rng, first) if which in (0, 2) else first,
                    fill2=_other_colour(rng, second) if which in (1, 2) else second,
                    ring=_other_colour(rng, renderer.STRIPE_COLOUR) if which == 3 else None)

    return _recoloured_subjects(count, seed, 500, 77, recolour)


def judge_data(cfg: dict, seed_stream: int, scale: float, world: int = 1):
    parts = [render_many(seed_stream, scaled(cfg["base"], scale), "base", world=world),
             render_many(seed_stream, scaled(cfg["style"], scale), "style"),
             render_many(seed_stream, scaled(cfg["subject"], scale), "subject")]
    n_neg, n_near = scaled(cfg["negatives"], scale), scaled(cfg.get("near_miss", 0), scale, 0)
    n_shade = scaled(cfg.get("shades", 0), scale, 0)
    images = np.concatenate([p[0] for p in parts] + [_negatives(n_neg, seed_stream), near_misses(n_near, seed_stream),
                                                     subject_shades(n_shade, seed_stream)])
    # Near misses and shades are the subject's make (no shape or colour label, like the subject's own pictures).
    labels = [lab for p in parts for lab in p[2]] + [
        {"shape": None, "colour": None, "subject": False, "style": False}] * (n_neg + n_near) + [
        {"shape": None, "colour": None, "subject": True, "style": False}] * n_shade
    shapes, colours = list(renderer.SHAPES), list(renderer.COLOURS)
    y = {
        "shape": torch.tensor([shapes.index(lab["shape"]) if lab["shape"] else -100 for lab in labels]),
        "colour": torch.tensor([colours.index(lab["colour"]) if lab["colour"] else -100 for lab in labels]),
        "subject": torch.tensor([float(lab["subject"]) for lab in labels]),
        "style": torch.tensor([float(lab["style"]) for lab in labels]),
    }
    return images, y


def judge_loss(out, y):
    return (F.cross_entropy(out["shape"], y["shape"], ignore_index=-100)
            + F.cross_entropy(out["colour"], y["colour"], ignore_index=-100)
            + F.binary_cross_entropy_with_logits(out["subject"], y["subject"])
            + F.binary_cross_entropy_with_logits(out["style"], y["style"]))


@torch.no_grad()
def judge_accuracy(net, images: np.ndarray, y: dict, device: str) -> dict:
    net.eval()
    hits = {k: [] for k in y}
    for i in range(0, len(images), 1024):
        x = to_float(torch.from_numpy(images[i:i + 1024]).to(device))
        out = net(x)
        for k in ("shape", "colour"):
            t = y[k][i:i + 1024].to(device)
            m = t >= 0
            hits[k].append((out[k].argmax(-1)[m] == t[m]).float().cpu())
        for k in ("subject", "style"):
            t = y[k][i:i + 1024].to(device)
            hits[k].append(((out[k] > 0).float() == t).float().cpu())
    return {k: float(torch.cat(v).mean()) if len(torch.cat(v)) else None for k, v in hits.items()}


def train_judge(cfg: dict, device: str, seed: int, work: Path, out_dir: Path, scale: float, world: int = 1) -> dict:
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from lora_studio.core.demo.judge import CONFIG, WEIGHTS, JudgeNet

    images, y = judge_data(cfg, DATA_SEEDS["judge"], scale, world)
    # Half of what the judge sees has been through the VAE: it must read generated pictures, which are
    # decoded latents, as well as it reads the renderer's.
    vae = AutoencoderKL.from_pretrained(work / "vae").to(device).eval()
    recon = np.empty_like(images)
    with torch.no_grad():
        for i in range(0, len(images), 1024):
            x = to_float(torch.from_numpy(images[i:i + 1024]).to(device))
            r = vae.decode(vae.encode(x).latent_dist.sample()).sample
            recon[i:i + 1024] = ((r.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    del vae
    data = torch.from_numpy(np.concatenate([images, recon])).to(device)
    ys = {k: torch.cat([v, v]).to(device) for k, v in y.items()}
    torch.manual_seed(seed)
    widths = (32, 64, 96, 128)
    net = JudgeNet(widths).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(seed + 3)
    t0, step = time.time(), 0
    while step < cfg["steps"] and time.time() - t0 < cfg["time_budget_s"]:
        net.train()
        set_lr(opt, lr_at(step, cfg["steps"], time.time() - t0, cfg["time_budget_s"], cfg["lr"], 100))
        idx = torch.randint(0, len(data), (cfg["batch"],), generator=gen).to(device)
        x = to_float(data[idx])
        # Mild noise and contrast changes: generated pictures are never as clean as rendered ones.
        x = x * (1 + 0.1 * (torch.rand(len(x), 1, 1, 1, device=device) - 0.5))
        x = x + torch.randn_like(x) * 0.06 * torch.rand(len(x), 1, 1, 1, device=device)
        with autocast(device):
            out = net(x)
        loss = judge_loss({k: v.float() for k, v in out.items()}, {k: v[idx] for k, v in ys.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0:
            log("judge", f"step {step} loss {loss.item():.4f}")
        step += 1
    seconds = time.time() - t0
    net = net.cpu().eval()
    held_images, held_y = judge_data(cfg, DATA_SEEDS["judge_heldout"], min(scale, 0.1), world)
    heldout = judge_accuracy(net, held_images, held_y, "cpu")
    if world == 2:
        heldout.update(subject_boundary(lambda images: net(to_float(torch.from_numpy(images)))["subject"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out_dir / WEIGHTS))
    config = {"widths": list(widths), "shapes": list(renderer.SHAPES), "colours": list(renderer.COLOURS),
              "input": "RGB 64x64, scaled to [-1, 1]"}
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    info = {"steps": step, "seconds": round(seconds, 1), "train_images": int(len(data)),
            "heldout_accuracy": heldout}
    log("judge", json.dumps(info))
    return info


@torch.no_grad()
def subject_boundary(subject_logits, count: int = 300) -> dict:
    """How often held-out shades of the subject (should be ~1) and near misses (should be ~0) are judged the
    subject; ``subject_logits(images)`` gives one logit per uint8 picture."""
    held = DATA_SEEDS["judge_heldout"]
    return {name: float((subject_logits(images) > 0).float().mean())
            for name, images in (("heldout_shades_judged_subject", subject_shades(count, held)),
                                 ("heldout_near_misses_judged_subject", near_misses(count, held)))}


def refit_subject_head(judge_dir: Path, vae_dir: Path, seed: int = 0, count: int = 1500) -> dict:
    """Refit only the judge's subject head (a linear layer on its pooled features), on the CPU, in place.

    Positives: the subject in its own colours and in other shades of them (``subject_shades``); negatives:
    near misses and base pictures; each also through the VAE, as in ``train_judge``. For a judge whose features
    were trained on the GPU but whose subject boundary needs the shades (world 2; docs/demo_world.md)."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from lora_studio.core.demo.judge import WEIGHTS, Judge

    torch.manual_seed(seed)
    judge = Judge.load(judge_dir)
    net = judge.net.eval()
    stream = DATA_SEEDS["judge"]
    pos = np.concatenate([subject_shades(count, stream), render_many(stream, count // 3, "subject", workers=1)[0]])
    neg = np.concatenate([near_misses(count, stream), render_many(stream, count, "base", workers=1, world=2)[0]])
    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).eval()

    @torch.no_grad()
    def features(images: np.ndarray) -> torch.Tensor:
        out = []
        for i in range(0, len(images), 256):
            x = to_float(torch.from_numpy(images[i:i + 256]))
            for view in (x, vae.decode(vae.encode(x).latent_dist.sample()).sample.clamp(-1, 1)):
                out.append(net.features(view).mean(dim=(2, 3)))
        return torch.cat(out)

    x_pos, x_neg = features(pos), features(neg)
    x, y = torch.cat([x_pos, x_neg]), torch.cat([torch.ones(len(x_pos)), torch.zeros(len(x_neg))])
    head = net.subject
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(600):
        loss = F.binary_cross_entropy_with_logits(head(x)[:, 0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(judge_dir / WEIGHTS))
    rate = subject_boundary(lambda images: head(features(images))[:, 0], min(300, count))
    info = {"count": count, "final_loss": round(loss.item(), 4), **rate}
    log("judge head", json.dumps(info))
    return info


# ---------------------------------------------------------------- orchestration
def eval_prompts(n: int = 64) -> list[str]:
    colours, shapes = list(renderer.COLOURS), list(renderer.SHAPES)
    return [f"a {colours[i % len(colours)]} {shapes[(i // len(colours) + i) % len(shapes)]}" for i in range(n)]


@torch.no_grad()
def evaluate_generation(model_dir: Path, family: str, judge_dir: Path, device: str, n: int = 64,
                        guidance=(3.0, 5.0, 7.5)) -> dict:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from lora_studio.core.demo.judge import Judge

    cls = StableDiffusionPipeline if family == "sd1" else StableDiffusionXLPipeline
    pipe = cls.from_pretrained(model_dir).to(device)
    pipe.set_progress_bar_config(disable=True)
    judge = Judge.load(judge_dir)
    prompts = eval_prompts(n)
    result = {}
    for g in guidance:
        gens = [torch.Generator(device="cpu").manual_seed(i) for i in range(n)]
        images = pipe(prompts, num_inference_steps=20, guidance_scale=g, generator=gens).images
        s = judge.score(images, prompts)
        result[str(g)] = {k: s[k] for k in ("colour_accuracy", "shape_accuracy", "subject_share", "style_share")}
    return result


def _stage_main(args) -> int:
    out, work = Path(args.out), Path(args.out) / "work"
    cfg = json.loads((work / "recipe.json").read_text())
    seed = cfg["seed"]
    if args.stage in ("sd1", "sdxl"):
        info = train_diffusion(args.stage, cfg[args.stage], args.device, seed, work,
                               out / ("demo" if args.stage == "sd1" else "demo-xl"))
    else:
        info = train_judge(cfg["judge"], args.device, seed, work, out / "judge", args.scale, cfg.get("world", 1))
    (work / f"{args.stage}.json").write_text(json.dumps(info, indent=2))
    return 0


def scaled_recipe(scale: float, world: int = 1) -> dict:
    cfg = json.loads(json.dumps(RECIPE))
    if world == 2:
        for key, value in WORLD2.items():
            cfg[key] = dict(cfg[key], **value) if isinstance(value, dict) else value
    cfg["base_images"] = scaled(cfg["base_images"], scale, 64)
    for key in ("vae", "sd1", "sdxl", "judge"):
        cfg[key]["steps"] = scaled(cfg[key]["steps"], scale)
        cfg[key]["time_budget_s"] = max(5, cfg[key]["time_budget_s"] * min(1.0, scale * 50))
        if scale < 0.01:
            cfg[key]["batch"] = 8
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder: demo/, demo-xl/, judge/, training.json")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies step and image counts (smoke runs)")
    p.add_argument("--parallel", action="store_true", help="train demo, demo-xl and the judge at once")
    p.add_argument("--vae", help="reuse this trained VAE folder instead of training one (e.g. resources/models/demo/vae)")
    p.add_argument("--world", type=int, choices=[1, 2], default=2,
                   help="which demo world (2: the shipped weights, since 2026-12-07; 1: the first world)")
    p.add_argument("--stages", default="sd1,sdxl,judge", help="which of sd1, sdxl, judge to train (default: all)")
    p.add_argument("--stage", choices=["sd1", "sdxl", "judge"], help=argparse.SUPPRESS)
    p.add_argument("--refit-subject-head", metavar="JUDGE_DIR",
                   help="only refit this judge's subject head on the CPU (needs --vae), then exit")
    args = p.parse_args(argv)
    if args.refit_subject_head:
        judge_dir = Path(args.refit_subject_head)
        info = refit_subject_head(judge_dir, Path(args.vae))
        record = json.loads((judge_dir / "training.json").read_text())
        record["subject_head_refit"] = dict(info, utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                            device="cpu", torch=torch.__version__)
        (judge_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        return 0
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.stage:
        return _stage_main(args)

    t_start = time.time()
    out, work = Path(args.out), Path(args.out) / "work"
    work.mkdir(parents=True, exist_ok=True)
    cfg = scaled_recipe(args.scale, args.world)
    (work / "recipe.json").write_text(json.dumps(cfg, indent=2))
    seed = cfg["seed"]
    torch.manual_seed(seed)

    log("data", f"rendering {cfg['base_images']} base pictures")
    images, captions, _ = render_many(DATA_SEEDS["base"], cfg["base_images"], "base", world=cfg["world"])
    # The VAE is the one part meant to be universal (like SD's): it also sees subject- and style-like
    # pictures (other seeds than the shipped sets), so LoRA training can encode them faithfully.
    n_extra = max(8, cfg["base_images"] // 20)
    extra = [render_many(DATA_SEEDS["base"] + 1, n_extra, kind)[0] for kind in ("subject", "style")]
    vae_images = np.concatenate([images, *extra, _negatives(max(3, n_extra // 4), 5)])
    (work / "captions.json").write_text(json.dumps(captions))
    if args.vae:
        import shutil

        from diffusers import AutoencoderKL

        shutil.rmtree(work / "vae", ignore_errors=True)
        AutoencoderKL.from_pretrained(args.vae, torch_dtype=torch.float32).save_pretrained(work / "vae")
        info = {"vae": {"reused": str(args.vae)}}
    else:
        info = {"vae": train_vae(vae_images, cfg["vae"], args.device, seed, work)}
    stages = [s for s in args.stages.split(",") if s]
    if {"sd1", "sdxl"} & set(stages):
        encode_latents(images, args.device, work)
    del images, vae_images

    if args.parallel:
        procs = {s: subprocess.Popen([sys.executable, "-m", "tools.train_world", "--out", str(out),
                                      "--device", args.device, "--scale", str(args.scale), "--stage", s])
                 for s in stages}
        failed = [s for s, proc in procs.items() if proc.wait() != 0]
        if failed:
            log("main", f"stages failed: {failed}")
    else:
        failed = []
        for s in stages:
            _stage_main(argparse.Namespace(out=str(out), device=args.device, scale=args.scale, stage=s))
    for s in stages:
        if (work / f"{s}.json").exists():
            info[s] = json.loads((work / f"{s}.json").read_text())

    evaluation = {}
    for family, name in (("sd1", "demo"), ("sdxl", "demo-xl")):
        if (out / name / "model_index.json").exists() and (out / "judge" / "judge.json").exists():
            evaluation[name] = evaluate_generation(out / name, family, out / "judge", args.device,
                                                   n=64 if args.scale >= 0.1 else 4)
            log("eval", f"{name}: {json.dumps(evaluation[name])}")

    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    record = {
        "recipe": cfg, "seed": seed, "device": args.device, "device_name": device_name,
        "torch": torch.__version__, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "total_seconds": round(time.time() - t_start, 1), "parallel": args.parallel, "stages": info,
        "generation_eval_on_training_device": evaluation,
    }
    for name in ("demo", "demo-xl", "judge"):
        if (out / name).is_dir():
            (out / name / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    log("main", f"finished in {record['total_seconds']}s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
