"""Tile sizes and warps of the engine's Triton kernels, timed on the shapes and counts of a real step (issue 8).

    python -m bench.kernel_tiles [--out bench/results] [--tag _x] [--kernels norm,ln,geglu]

`fast_norm` (GroupNorm + SiLU on channels-last maps), `fast_layernorm` and `fast_geglu` are memory-bound:
each reads and writes a few full activations. For each candidate setting (tile shape, warps) this times
forward and backward at every shape the SD 1.5 b8 / SDXL b4 step gives the kernel, weighted by how many
times one step calls it (the UNets' norms counted with forward hooks), and reports milliseconds per step
and the effective bandwidth (bytes the kernels must move / time). Each measurement replays a CUDA graph of
ten calls, as the engine's step does: timing eager calls measured the host's launch overhead instead
(attempt 17's first sweep). The current setting is each table's first row. Writes kernel_tiles_<card>.json
/ .md under --out.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
from pathlib import Path

import torch

from lora_studio.core.accel import fast_geglu as fg
from lora_studio.core.accel import fast_layernorm as fl
from lora_studio.core.accel import fast_norm as fn
from bench.record import default_out, invoked, save

ROOT = Path(__file__).resolve().parents[1]

# one step's calls: {shape: count}, from forward hooks on the full-size UNets (SD 1.5 b8 at 512 px, SDXL b4 at 1024)
NORM_CALLS = {
    "sd15 b8": {(8, 320, 32, 32): 1, (8, 320, 64, 64): 13, (8, 640, 16, 16): 1, (8, 640, 32, 32): 11,
                (8, 640, 64, 64): 2, (8, 960, 32, 32): 1, (8, 960, 64, 64): 1, (8, 1280, 8, 8): 12,
                (8, 1280, 16, 16): 11, (8, 1280, 32, 32): 1, (8, 1920, 16, 16): 1, (8, 1920, 32, 32): 1,
                (8, 2560, 8, 8): 3, (8, 2560, 16, 16): 2},
    "sdxl b4": {(4, 320, 64, 64): 1, (4, 320, 128, 128): 8, (4, 640, 32, 32): 1, (4, 640, 64, 64): 11,
                (4, 640, 128, 128): 2, (4, 960, 64, 64): 1, (4, 960, 128, 128): 1, (4, 1280, 32, 32): 16,
                (4, 1280, 64, 64): 1, (4, 1920, 32, 32): 1, (4, 1920, 64, 64): 1, (4, 2560, 32, 32): 2},
}
LN_CALLS = {"sd15 b8": {(8 * 64, 1280): 3, (8 * 256, 1280): 15, (8 * 1024, 640): 15, (8 * 4096, 320): 15},
            "sdxl b4": {(4 * 1024, 1280): 180, (4 * 4096, 640): 30}}
GEGLU_CALLS = {"sd15 b8": {(8 * 4096, 1280): 5, (8 * 1024, 2560): 5, (8 * 256, 5120): 5, (8 * 64, 5120): 1},
               "sdxl b4": {(4 * 4096, 2560): 4, (4 * 1024, 5120): 60}}

# (first: the engine's setting; attempt 17 measured the others against 64x64x4 and 4096x8)
NORM_TILES = [(64, 64, 8), (64, 64, 4), (128, 64, 4), (128, 64, 8), (64, 128, 4), (64, 128, 8), (128, 128, 8),
              (256, 64, 8), (32, 128, 4), (32, 64, 2), (128, 32, 4), (32, 64, 4), (32, 64, 8), (64, 64, 16)]
LN_TILES = [(2048, 4), (4096, 8), (4096, 4), (8192, 8), (8192, 16), (2048, 8), (1024, 4)]  # (TILE elements, warps)
GEGLU_TILES = [(4, 256, 4), (8, 256, 4), (4, 512, 4), (2, 1024, 4), (8, 512, 8), (16, 256, 8)]
INNER = 10  # calls per captured graph


def graph_ms(fn_, reps: int) -> float:
    """Milliseconds per call of `fn_`, replayed from a CUDA graph of INNER calls (median of `reps` replays)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn_()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(INNER):
            fn_()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / INNER)
    del g
    return statistics.median(times)


def _norm_case(shape):
    b, c, h, w = shape
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    wt, bias = torch.randn(c, device="cuda", dtype=torch.bfloat16), torch.randn(c, device="cuda", dtype=torch.bfloat16)
    shift = torch.randn(b, c, device="cuda")
    tok = fn._tokens(x)
    dy = fn._tokens(torch.randn_like(x))
    _, mean, rstd = fn._launch(tok, None, wt, bias, 32, 1e-5, silu=True, shift=shift)
    fwd = lambda: fn._launch(tok, None, wt, bias, 32, 1e-5, silu=True, shift=shift)  # noqa: E731
    bwd = lambda: fn._launch(tok, dy, wt, bias, 32, 0.0, stats=(mean, rstd), silu=True, shift=shift)  # noqa: E731
    return x.numel() * 2, fwd, bwd


def _ln_case(shape):
    rows, c = shape
    x = torch.randn(rows, c, device="cuda", dtype=torch.bfloat16)
    r = torch.randn_like(x)
    wt, bias = torch.randn(c, device="cuda", dtype=torch.bfloat16), torch.randn(c, device="cuda", dtype=torch.bfloat16)
    dy, gs = torch.randn_like(x), torch.randn_like(x)
    s, _, mean, rstd = fl._launch_forward(x, r, wt, bias, 1e-5)
    fwd = lambda: fl._launch_forward(x, r, wt, bias, 1e-5)  # noqa: E731 (the fused add + norm)
    bwd = lambda: fl._launch_backward(s, dy, gs, wt, mean, rstd)  # noqa: E731
    return x.numel() * 2, fwd, bwd


def _geglu_case(shape):
    rows, d = shape
    h = torch.randn(rows, 2 * d, device="cuda", dtype=torch.bfloat16)
    dy = torch.randn(rows, d, device="cuda", dtype=torch.bfloat16)
    triton, kf, kb = fg._kernels()
    out, dh = torch.empty_like(dy), torch.empty_like(h)

    def fwd():
        kf[fg._grid(triton, rows, d)](h, out, rows, d, BR=fg.BLOCK_R, BD=fg.BLOCK_D, num_warps=fg.WARPS)

    def bwd():
        kb[fg._grid(triton, rows, d)](h, dy, dh, rows, d, BR=fg.BLOCK_R, BD=fg.BLOCK_D, num_warps=fg.WARPS)

    return dy.numel() * 2, fwd, bwd


# kernel: (calls per family, tiles, how to set a tile, case builder, bytes moved as multiples of one tensor)
KERNELS = {
    "norm": (NORM_CALLS, NORM_TILES, lambda t: _set(fn, ("BLOCK_P", "BLOCK_C", "WARPS"), t), _norm_case, (3, 5)),
    "ln": (LN_CALLS, LN_TILES, lambda t: _set(fl, ("TILE", "WARPS"), t), _ln_case, (4, 4)),
    "geglu": (GEGLU_CALLS, GEGLU_TILES, lambda t: _set(fg, ("BLOCK_R", "BLOCK_D", "WARPS"), t), _geglu_case, (3, 5)),
}


def _set(module, names, values):
    for n, v in zip(names, values):
        setattr(module, n, v)


def sweep(kernel: str, reps: int) -> list[dict]:
    calls, tiles, set_tile, case, (nf, nb) = KERNELS[kernel]
    rows = []
    try:
        for family, shapes in calls.items():
            cases = {shape: case(shape) for shape in shapes}
            for tile in tiles:
                set_tile(tile)
                fwd_ms = bwd_ms = moved = 0.0
                for shape, n in shapes.items():
                    nbytes, fwd, bwd = cases[shape]
                    fwd_ms += n * graph_ms(fwd, reps)
                    bwd_ms += n * graph_ms(bwd, reps)
                    moved += n * nbytes * (nf + nb)
                rows.append({"kernel": kernel, "family": family, "tile": list(tile), "fwd_ms": fwd_ms,
                             "bwd_ms": bwd_ms, "gbs": moved / (fwd_ms + bwd_ms) / 1e6})
                print(json.dumps(rows[-1]), flush=True)
            del cases
    finally:
        set_tile(tiles[0])
    return rows


def render(res: dict) -> str:
    lines = [f"# Triton kernel tiles — {res['card']}, {res['date']}", "",
             "Milliseconds per training step spent in the kernel (every shape the step gives it, times its calls; "
             "CUDA-graph replays), and the effective bandwidth: bytes the kernels must move (GroupNorm 3 maps "
             "forward, 5 backward; fused add + LayerNorm 4 and 4; GEGLU 3 and 5 of its output's size) over that "
             "time. First row: the setting the engine ran with when this was measured.", ""]
    for kernel in dict.fromkeys(r["kernel"] for r in res["rows"]):
        for family in dict.fromkeys(r["family"] for r in res["rows"] if r["kernel"] == kernel):
            sel = [r for r in res["rows"] if r["kernel"] == kernel and r["family"] == family]
            lines += [f"## {kernel}, {family}", "", "| tile | forward ms | backward ms | total ms | GB/s |",
                      "|---|---|---|---|---|"]
            lines += [f"| {'x'.join(map(str, r['tile']))} | {r['fwd_ms']:.3f} | {r['bwd_ms']:.3f} | "
                      f"{r['fwd_ms'] + r['bwd_ms']:.3f} | {r['gbs']:.0f} |" for r in sel]
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    invoked(__spec__.name, argv)  # the command line every result records
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=default_out())
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--tag", default="")
    ap.add_argument("--kernels", default="norm,ln,geglu")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("kernel_tiles needs a CUDA GPU")
    if not (fn.available("cuda") and fl.available("cuda") and fg.available("cuda")):
        raise SystemExit("the Triton kernels failed their self-check on this GPU")
    res = {"card": torch.cuda.get_device_name(), "torch": torch.__version__,
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rows": []}
    card = res["card"].split()[1].lower() if len(res["card"].split()) > 1 else "gpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for kernel in args.kernels.split(","):
        res["rows"] += sweep(kernel, args.reps)
        save(out, f"kernel_tiles_{card}{args.tag}", res, render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
