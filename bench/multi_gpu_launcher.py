"""Several GPUs through the app's own launcher: one process vs N processes, images per second.

    python -m bench.multi_gpu_launcher --out DIR [--processes 2] [--steps 200] [--batch 4] [--tiny]

Both runs go through `lora-studio train CONFIG --processes K` exactly as a user runs it (K = 1 trains in-process).
The model is SD 1.5's full-size UNet with random weights (same FLOPs as the real one, no download) behind the
demo VAE and text encoder: 256 px images give SD 1.5's 64x64 latents, so a step is compute-bound. `--tiny` uses
the demo model at 64 px (a CPU smoke run of this script; its numbers mean nothing).
Throughput: the last train Progress event's it/s (a 20-step window, warm-up excluded) x batch x processes.
The issue's bar: N=2 at batch 4 per GPU reaches >= 1.8x the images/s of one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from bench import models as M
from lora_studio.config import TrainingConfig, save
from lora_studio.core import events as ev


def build_model(folder: Path) -> Path:
    from diffusers import UNet2DConditionModel

    from lora_studio.core.demo.build import SD1_TEXT, build_sd1_components, pipeline_from_components

    if (folder / "model_index.json").exists():
        return folder
    parts = build_sd1_components(seed=0)
    parts["unet"] = UNet2DConditionModel(**dict(M.SD15_UNET, cross_attention_dim=SD1_TEXT["hidden"]))
    pipeline_from_components("sd1", parts).save_pretrained(folder)
    return folder


def run(out: Path, model: str, processes: int, args) -> dict:
    name = f"p{processes}"
    data = ROOT / "resources" / "datasets" / "demo-style"
    cfg = TrainingConfig(pretrained_model_name_or_path=model, train_data_dir=str(data),
                         output_dir=str(out / name), mode="style", resolution=args.resolution, rank=16,
                         train_batch_size=args.batch, max_train_steps=args.steps, checkpointing_steps=10**6,
                         mixed_precision=args.precision, report_to="none", validation_prompt="")
    save(cfg, out / f"{name}.toml")
    events = out / f"{name}.jsonl"
    events.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(out / f"{name}.toml"),
                           "--processes", str(processes), "--events", str(events)],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    seen = list(ev.read_jsonl(events.read_text(encoding="utf-8").splitlines()))
    progress = [e for e in seen if isinstance(e, ev.Progress) and e.phase == "train"]
    result = seen[-1].result
    rate = progress[-1].it_per_s
    return {"processes": result["num_processes"], "steps": result["steps"], "wall_s": round(wall, 1),
            "it_per_s": rate, "images_per_s": rate * args.batch * result["num_processes"],
            "final_loss": result["final_loss"], "fast_path": result["fast_path"].get("active"),
            "vram_peak_rank0": progress[-1].vram_peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4, help="per GPU")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    out = Path(args.out).resolve() / "multi_gpu_launcher"
    out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        model, args.resolution, args.precision = "demo", 64, "no"
    else:
        model = str(build_model(out / "sd15_random"))
    one = run(out, model, 1, args)
    many = run(out, model, args.processes, args)
    ratio = many["images_per_s"] / one["images_per_s"]
    report = {"args": vars(args), "one": one, "many": many, "speedup": round(ratio, 3), "bar": 1.8,
              "meets_bar": ratio >= 1.8}
    (out / "result.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
