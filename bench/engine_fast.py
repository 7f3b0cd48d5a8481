"""The training engine end to end, fast path on against off: same loss curve, same LR schedule, faster.

    python -m bench.engine_fast [--steps 200] [--model demo] [--out bench/results]

Runs ``lora_studio.core.training.train`` twice on the demo model and the demo style dataset (bf16, cosine
schedule with warm-up, batch 2) with ``fast_path`` true and false, and compares the loss histories (10-step
moving average, pass within 1%), the learning rates the Progress events report (they must match: the
scheduler runs on the host after each replay), wall time per step, and how many steps were replayed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lora_studio.config import TrainingConfig
from lora_studio.core import events as ev
from bench.record import default_out

ROOT = Path(__file__).resolve().parents[1]


def run(model, data, out, steps, fast, batch):
    from lora_studio.core.training import train

    cfg = TrainingConfig(pretrained_model_name_or_path=model, train_data_dir=str(data), output_dir=str(out),
                         resolution=64, rank=8, learning_rate=2e-4, lr_scheduler="cosine", lr_warmup_steps=10,
                         max_train_steps=steps, train_batch_size=batch, mixed_precision="bf16",
                         checkpointing_steps=10 ** 6, report_to="none", seed=3, fast_path=fast,
                         enable_bucket=False, center_crop=True)
    events: list = []
    t0 = time.perf_counter()
    result = train(cfg, events.append)
    wall = time.perf_counter() - t0
    progress = [e for e in events if isinstance(e, ev.Progress) and e.phase == "train"]
    info = {"wall_s": wall, "warnings": [e.msg for e in events if isinstance(e, ev.Warning)],
            "loss": [x[1] for x in result["loss_history"]], "lr": [e.lr for e in progress]}
    if progress and len(progress) > 20:
        info["it_per_s_last"] = progress[-1].it_per_s
    f = result["fast_path"]  # the engine's record of its CUDA-graph step
    info.update(fast_active=f["active"], fast_reason=f["reason"], replays=f.get("replays", 0),
                eager_calls=f.get("eager_calls"), graphs=f.get("graphs", 0), capture_s=f.get("capture_s"))
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--data", default=str(ROOT / "resources" / "datasets" / "demo-style"))
    ap.add_argument("--out", default=default_out())
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    result = {"card": torch.cuda.get_device_name(0) if cuda else "cpu", "model": args.model, "steps": args.steps,
              "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "data")
        shutil.copytree(args.data, data)
        for fast in (True, False):
            name = "fast" if fast else "eager"
            result["runs"][name] = run(args.model, data, Path(tmp, name), args.steps, fast, args.batch)
            r = result["runs"][name]
            print(name, json.dumps({k: v for k, v in r.items() if k not in ("loss", "lr")}), flush=True)
    a = torch.tensor(result["runs"]["fast"]["loss"])
    b = torch.tensor(result["runs"]["eager"]["loss"])
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    w = min(10, n)
    ma = lambda x: torch.nn.functional.avg_pool1d(x.view(1, 1, -1), w, 1).view(-1)  # noqa: E731
    result["max_step_rel"] = float(((a - b).abs() / b.abs().clamp_min(1e-12)).max()) if n else None
    result["max_ma10_rel"] = float(((ma(a) - ma(b)).abs() / ma(b).abs().clamp_min(1e-12)).max()) if n else None
    lr_f, lr_e = result["runs"]["fast"]["lr"], result["runs"]["eager"]["lr"]
    result["lr_max_abs_diff"] = max((abs(x - y) for x, y in zip(lr_f, lr_e)), default=None)
    result["pass"] = bool(n and result["max_ma10_rel"] <= 0.01 and (result["lr_max_abs_diff"] or 0) <= 1e-9)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "h100" if "H100" in result["card"] else "h200" if "H200" in result["card"] else "gpu" if cuda else "cpu"
    stem = f"engine_fast_{tag}" + ("" if args.model == "demo" else f"_{args.model}")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    f, e = result["runs"]["fast"], result["runs"]["eager"]
    summary = (f"engine fast vs eager ({result['card']}, {args.model}, {n} steps): max step rel "
               f"{result['max_step_rel']:.2e}, max MA10 rel {result['max_ma10_rel']:.2e}, lr max diff "
               f"{result['lr_max_abs_diff']}, wall {f['wall_s']:.1f} s vs {e['wall_s']:.1f} s, fast active "
               f"{f.get('fast_active')} ({f.get('fast_reason')}), replays {f.get('replays')}, pass {result['pass']}")
    (out / f"{stem}.md").write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
