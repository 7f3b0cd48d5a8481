"""CPU timings of the demo models (docs/demo_world.md records them).

    python -m tools.demo_timing [--threads 2]

Prints the load average too: on a shared machine other processes' load changes these numbers a lot.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def _median_seconds(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(name: str) -> dict:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from peft import LoraConfig

    from lora_studio.core.demo import demo_model_path

    cls = StableDiffusionPipeline if name == "demo" else StableDiffusionXLPipeline
    t = time.perf_counter()
    pipe = cls.from_pretrained(demo_model_path(name), local_files_only=True)
    load_s = time.perf_counter() - t
    pipe.set_progress_bar_config(disable=True)

    def generate():
        pipe("a red circle", num_inference_steps=20, guidance_scale=5.0, generator=torch.Generator().manual_seed(0))

    gen_s = _median_seconds(generate)

    # One LoRA training step at batch 4 (rank 4 on the attention projections), forward + backward + AdamW.
    unet = pipe.unet
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    cross = unet.config.cross_attention_dim
    x, emb = torch.randn(4, 4, 16, 16), torch.randn(4, 77, cross)
    kwargs = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = pipe.text_encoder_2.config.projection_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(4, pooled),
                                       "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * 4, dtype=torch.float32)}

    def step():
        loss = unet(x, torch.randint(0, 1000, (4,)), encoder_hidden_states=emb, **kwargs).sample.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step_s = _median_seconds(step, repeats=10)
    return {"load_s": round(load_s, 3), "generate_20_steps_cfg_s": round(gen_s, 3),
            "lora_train_step_batch4_s": round(step_s, 4), "lora_300_steps_s": round(300 * step_s, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "load_avg_before": os.getloadavg()}
    for name in ("demo", "demo-xl"):
        result[name] = measure(name)
    result["load_avg_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
