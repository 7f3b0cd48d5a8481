"""Provoke one real CUDA out-of-memory in a training step and record what the user would be told.

    python -m bench.oom [--cap-gib 7] [--out bench/results]

Full-size SDXL at 1024, rank 32, batch 2, no checkpointing (needs ~20+ GiB), with the process capped by
torch.cuda.set_per_process_memory_fraction. Writes oom_<card>.txt: the exception's text, and the message
and advice that the training engine (engine._failure_words) and errors.describe give for it.
"""

from __future__ import annotations

import argparse
import traceback
from pathlib import Path

import torch

from bench import models as M
from bench.steps import alphas_cumprod, make_step
from bench.record import default_out

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cap-gib", type=float, default=7.0)
    ap.add_argument("--out", default=default_out())
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 2
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(args.cap_gib * 2 ** 30 / total)
    spec = M.MODELS["sdxl"]
    unet, _ = M.build_unet(spec[0], "cuda")
    params = M.add_lora(unet, 32)
    opt = torch.optim.AdamW(params, lr=1e-4)
    step = make_step(unet, params, opt, acp=alphas_cumprod("cuda"))
    batch = M.make_batch(spec, 2, "cuda")
    lines = [f"card: {torch.cuda.get_device_name(0)}; torch {torch.__version__}",
             f"setup: SDXL UNet bf16 + LoRA rank 32, batch 2 at 1024, no gradient checkpointing, "
             f"memory capped at {args.cap_gib} GiB; allocated before the step: "
             f"{torch.cuda.memory_allocated() / 2 ** 30:.2f} GiB", ""]
    oom = False
    try:
        step(batch)
        torch.cuda.synchronize()
        lines.append("NO out-of-memory happened (raise the batch or lower --cap-gib).")
    except torch.cuda.OutOfMemoryError as exc:
        oom = True
        lines += ["exception type: " + f"{type(exc).__module__}.{type(exc).__name__}",
                  "exception text:", str(exc), "",
                  "where: " + traceback.format_exc().strip().splitlines()[-3].strip()]
        from lora_studio.config import TrainingConfig
        from lora_studio.errors import describe

        message, advice = describe(exc)
        lines += ["", "errors.describe -> message: " + message, "errors.describe -> advice: " + advice]
        try:
            from lora_studio.core.training.engine import _failure_words

            cfg = TrainingConfig(pretrained_model_name_or_path="sdxl", resolution=1024, rank=32,
                                 train_batch_size=2, mixed_precision="bf16", gradient_checkpointing=False)
            m, a = _failure_words(exc, cfg)
            lines += ["engine (train) Failed event -> message: " + m, "engine (train) Failed event -> advice: " + a]
        except Exception as e:  # noqa: BLE001 - the engine may not be there yet
            lines.append(f"engine words unavailable: {type(e).__name__}: {e}")
    if oom:
        # The process must survive the OOM and go on (smaller batch, checkpointing). Outside the except
        # block: inside it, the traceback's frames still hold the failed step's activations.
        for p in params:
            p.grad = None
        opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        unet.enable_gradient_checkpointing()
        torch.cuda.reset_peak_memory_stats()
        try:
            loss = step(M.make_batch(spec, 1, "cuda"))
            lines.append(f"after the OOM, the same process trained batch 1 with checkpointing: loss {float(loss):.4f}, "
                         f"peak {torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB")
        except torch.cuda.OutOfMemoryError as exc2:
            lines.append(f"after the OOM, batch 1 with checkpointing also ran out: {str(exc2).splitlines()[0]}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "h100" if "H100" in torch.cuda.get_device_name(0) else "gpu"
    text = "\n".join(lines) + "\n"
    (out / f"oom_{tag}.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
