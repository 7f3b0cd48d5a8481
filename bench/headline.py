"""``python -m bench headline --out DIR``: the README's speed, memory and preview figures, rerun.

Each row of ``ROWS`` is one bench script with the arguments that produce README rows; every result it writes
records its command line, card and date (bench/record.py). ``--only speed,memory`` picks rows; ``--quick``
times fewer steps (a shorter call, noisier medians). Prints the command of each row before running it and
exits non-zero if any row failed. Needs a CUDA GPU for real figures (on the CPU the scripts' ``--tiny``
variants run instead, a smoke test of the harness).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

from bench.record import default_out

# The app runs torch's allocator with expandable segments (core/system.py): the memory rows measure that.
EXPANDABLE = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}

# name -> (README rows it reproduces, module, arguments, extra environment)
ROWS = {
    "speed": ("Speed: SD 1.5 512 b1/b8, SDXL 1024 b1/b4 ms/step against the eager reference, SDXL setup",
              "bench.train_step", ["--models", "sdxl,sd15", "--batches-for", "sd15=1,8", "--batches-for", "sdxl=1,4",
                                   "--checkpointing", "off", "--paths", "reference,engine"], {}),
    "memory": ("Memory: SD 1.5 512 / SDXL 1024 b1 peak with checkpointing, bf16 and int8_base, the step's ms",
               "bench.lowmem", ["--models", "sdxl,sd15", "--variants", "bf16+engine,int8+engine"], EXPANDABLE),
    "preview": ("Preview: slider -> finished 20-step image with two LoRAs, SD 1.5 512 / SDXL 1024, peak memory",
                "bench.preview_engine", ["--models", "sd15,sdxl", "--variants", "bf16"], EXPANDABLE),
    "preview_lowmem": ("Preview on small cards: SDXL 1024 in low memory, and with the 8-bit UNet",
                       "bench.preview_engine", ["--models", "sdxl", "--variants", "bf16-lowmem,bf16-lowmem-int8",
                                                "--tag", "_lowmem"], EXPANDABLE),
}
QUICK = {"bench.train_step": ["--budget", "1.0", "--max-steps", "30"], "bench.lowmem": ["--budget", "0.8"],
         "bench.preview_engine": ["--repeats", "2"]}


def commands(out: str, only: list[str], quick: bool, cuda: bool) -> list[tuple[str, list[str], dict]]:
    todo = []
    for name in only:
        _, module, args, env = ROWS[name]
        args = [*args, *(QUICK.get(module, []) if quick else []), *([] if cuda else ["--tiny"]), "--out", out]
        todo.append((name, [sys.executable, "-m", module, *args], env))
    return todo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench headline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=default_out(), help="results folder (default: outside the repository)")
    ap.add_argument("--only", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    ap.add_argument("--quick", action="store_true", help="fewer timed steps per row")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in ROWS]
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    import torch

    failed = []
    for name, cmd, env in commands(args.out, only, args.quick, torch.cuda.is_available()):
        print(f"=== {name}: {ROWS[name][0]}\n{shlex.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, env={**os.environ, **env})
        print(f"=== {name} exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    print(f"results in {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
