"""Do the fast path's adapters pass the judge bars as often as the eager path's? (issue 8, second half)

    python -m bench.judge_fast [--recipes subject:demo style:demo style:demo-xl subject:demo-xl] [--seeds 3]
                               [--precisions bf16] [--parallel 8] [--judge-seeds 16] [--out bench/results]

For each judged recipe (``core/demo/recipe.py``), training seed 0..K-1 and precision, it runs
``train_and_judge`` twice on the GPU: ``fast_path`` on (captured step) and off (eager), judged by the same
judge (the PreviewEngine in fp32). Every run is a separate spawned process with one torch thread (the models
are tiny; a 16-core box runs several beside one GPU). Per run it records the scores, which bars passed, train
seconds, the final loss and loss history, and whether the step really replayed graphs: the engine's result
says (``result['fast_path']``: replays / eager calls / graphs), the Warning events are kept (a failed capture or compile says so
there), and dynamo's "hit config.recompile_limit" messages are caught (a transformer block left uncompiled).
Results: ``judge_fast_<card>.json`` and ``.md`` under ``--out``, rewritten after every finished run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from bench.record import default_out

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("subject:demo", "style:demo", "style:demo-xl", "subject:demo-xl")


def _one(job: dict, work: str) -> dict:
    """One training + judging run in a fresh process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # several runs share the CPU: no worker pools
    import logging

    import torch

    torch.set_num_threads(1)
    from lora_studio.core import events as ev
    from lora_studio.core.demo.quality import train_and_judge

    limits: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: limits.append(r.getMessage()[:300]) if "hit config." in r.getMessage() else None
    logging.getLogger("torch._dynamo.convert_frame").addHandler(handler)
    events: list = []
    out = Path(work) / job["name"]
    t0 = time.perf_counter()
    report = train_and_judge(job["kind"], job["model"], out, judge_seeds=job["judge_seeds"], emit=events.append,
                             seed=job["seed"], fast_path=job["fast"], mixed_precision=job["precision"],
                             **job.get("overrides", {}))
    row = dict(job)
    row.update({k: report.get(k) for k in ("scores", "passed", "all_passed", "final_loss", "train_seconds",
                                           "judge_seconds", "total_seconds", "steps")})
    row["loss"] = [round(x[1], 6) for x in report.get("loss_history", [])]
    row["warnings"] = [e.msg for e in events if isinstance(e, ev.Warning)]
    row["fast_path_warnings"] = [w for w in row["warnings"] if "fast path" in w]
    row["recompile_limit_hits"] = limits
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    # The engine's record of its CUDA-graph step (FastStep.stats + pure bf16 / compiled modules); None: eager.
    fast = report.get("fast_path") or {}
    row["fast"] = fast if fast.get("active") else None
    row["replayed"] = _replayed(row)
    try:
        from torch._dynamo.utils import counters

        row["dynamo_unique_graphs"] = int(counters["stats"].get("unique_graphs", 0))
    except Exception:  # noqa: BLE001 - informational only
        pass
    return row


def _replayed(row: dict) -> bool:
    """Every step but each batch shape's first (warm-up + capture) replayed; nothing fell back to eager."""
    f = row.get("fast")
    if not f:
        return False
    return bool(f["active"] and f["graphs"] and f["replays"] == (row.get("steps") or 0) - f["graphs"]
                and not f["eager_calls"] and not f["eager_shapes"] and not row.get("fast_path_warnings")
                and not row.get("recompile_limit_hits"))


def _typed(overrides: dict) -> dict:
    """--set values read as TOML literals, as in a config file (true, 2, 1e-4, "x"); a bare word stays a string."""
    import tomllib

    out = {}
    for key, value in overrides.items():
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"] if isinstance(value, str) else value
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def _jobs(args) -> list[dict]:
    jobs = []
    for recipe, seed, precision, fast in itertools.product(args.recipes, range(args.seeds), args.precisions,
                                                           (True, False)):
        kind, model = recipe.split(":")
        path = "fast" if fast else "eager"
        overrides = {"max_train_steps": args.steps} if args.steps else {}
        overrides.update(dict(kv.split("=", 1) for kv in args.set))
        jobs.append(dict(name=f"{kind}_{model}_s{seed}_{precision}_{path}", kind=kind, model=model, seed=seed,
                         precision=precision, fast=fast, path=path, judge_seeds=args.judge_seeds,
                         overrides=_typed(overrides)))
    # The longest runs (SDXL with compiled blocks, subjects with class images) first: the pool ends together.
    jobs.sort(key=lambda j: (j["model"] != "demo-xl", j["kind"] != "subject"))
    return jobs


def loss_distance(a: list[float], b: list[float], w: int = 10) -> dict | None:
    """How far loss curve ``a`` is from ``b``: 10-step moving averages (max / mean relative difference) and
    the last 100 steps' mean (relative difference, signed)."""
    n = min(len(a), len(b))
    if n < max(w, 100):
        return None
    ma = lambda x: [sum(x[i:i + w]) / w for i in range(n - w + 1)]  # noqa: E731
    rel = [abs(x - y) / abs(y) for x, y in zip(ma(a[:n]), ma(b[:n])) if y]
    tail = lambda x: sum(x[n - 100:n]) / 100  # noqa: E731
    return {"ma10_max": max(rel), "ma10_mean": sum(rel) / len(rel), "last100": (tail(a) - tail(b)) / tail(b)}


def _score(row: dict | None, key: str) -> str:
    return f"{row['scores'][key]:.2f}" if row and row.get("scores") and key in row["scores"] else "-"


def _short(scores: dict | None) -> str:
    if not scores:
        return "-"
    name = lambda k: k.replace("class_prompt_subject_at_1", "class@1").replace("subject_at_", "s@").replace(  # noqa: E731
        "style_at_", "z@")
    return ", ".join(f"{name(k)}={v:.2f}" for k, v in scores.items())


def _markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Judge bars, fast path vs eager ({meta['card']}, {meta['date']})", "",
             f"{meta['judge_seeds']} judged pictures per score; training seeds {meta['seeds']}; precision "
             f"{', '.join(meta['precisions'])}{'; config ' + ', '.join(meta['set']) if meta.get('set') else ''}; "
             f"{meta['parallel']} runs in parallel on one GPU (train seconds are "
             "contended wall times: compare them only loosely). `replayed`: every step but each batch shape's "
             "first (warm-up + capture) replayed a graph, no shape ran eagerly, no fast-path warning, no dynamo "
             "recompile-limit hit.", ""]
    done = {(r["kind"], r["model"], r["seed"], r["precision"], r["path"]) for r in rows}
    missing = [f"{k}:{m} seed {s} {p} {path}" for k, m in (x.split(":") for x in meta.get("recipes", []))
               for s in meta.get("seeds", []) for p in meta.get("precisions", []) for path in ("fast", "eager")
               if (k, m, s, p, path) not in done]
    if missing:
        lines += [f"Not finished ({len(missing)}): {', '.join(missing)}.", ""]
    if meta.get("note"):
        lines += [meta["note"], ""]
    lines += ["| recipe | seed | prec | path | scores | bars | train s | replays / eager | final loss | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["kind"], r["model"], r["precision"], r["seed"], r["path"] != "fast")):
        if "error" in r:
            lines.append(f"| {r['kind']}:{r['model']} | {r['seed']} | {r['precision']} | {r['path']} | error | | | | | "
                         f"{r['error'][:120]} |")
            continue
        failed = [k for k, ok in (r.get("passed") or {}).items() if not ok]
        bars = "pass" if r.get("all_passed") else "FAIL " + ",".join(failed)
        f = r.get("fast") or {}
        rep = f"{f.get('replays')} / {f.get('eager_calls')} ({f.get('graphs')} graphs)" if f else "-"
        note = []
        if r["path"] == "fast":
            note.append("replayed" if r.get("replayed") else "NOT replayed")
            if f.get("compiled_modules"):
                note.append(f"{f['compiled_modules']} compiled blocks")
            autocast = f.get("autocast", not f.get("pure_low_precision"))  # older result files say "autocast"
            note.append("autocast" if autocast else "pure bf16" if r["precision"] == "bf16" else "fp32")
        if r.get("fast_path_warnings"):
            note.append("warning: " + r["fast_path_warnings"][0][:80])
        loss = r.get("final_loss")
        lines.append(f"| {r['kind']}:{r['model']} | {r['seed']} | {r['precision']} | {r['path']} | {_short(r.get('scores'))} "
                     f"| {bars} | {r.get('train_seconds')} | {rep} | {loss:.4f} | {'; '.join(note)} |"
                     if loss is not None else f"| {r['kind']}:{r['model']} | {r['seed']} | | {r['path']} | | | | | | |")
    lines += ["", "Per recipe: bars passed (fast / eager), the main score at weight 1 per seed (fast / eager), and the "
              "loss curves' distance: 10-step moving averages of fast against eager, max and mean relative "
              "difference over the run, and the relative difference of the last 100 steps' mean loss.", "",
              "| recipe | prec | fast passes | eager passes | same verdict | score at 1 by seed, fast / eager | "
              "MA10 max | MA10 mean | last-100 mean |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (kind, model, prec), group in _by_recipe(rows).items():
        fast = {r["seed"]: r for r in group if r["path"] == "fast" and "error" not in r}
        eager = {r["seed"]: r for r in group if r["path"] == "eager" and "error" not in r}
        both = sorted(set(fast) & set(eager))
        same = sum(bool(fast[s].get("all_passed")) == bool(eager[s].get("all_passed")) for s in both)
        key = "subject_at_1" if kind == "subject" else "style_at_1"
        at1 = "; ".join(f"{s}: {_score(fast.get(s), key)} / {_score(eager.get(s), key)}"
                        for s in sorted(set(fast) | set(eager)))
        d = [loss_distance(fast[s]["loss"], eager[s]["loss"]) for s in both]
        d = [x for x in d if x]
        dist = (f"{max(x['ma10_max'] for x in d):.2%} | {max(x['ma10_mean'] for x in d):.2%} | "
                f"{max(abs(x['last100']) for x in d):.2%}") if d else "- | - | -"
        lines.append(f"| {kind}:{model} | {prec} | {sum(bool(r.get('all_passed')) for r in fast.values())}/{len(fast)} | "
                     f"{sum(bool(r.get('all_passed')) for r in eager.values())}/{len(eager)} | {same}/{len(both)} | "
                     f"{at1} | {dist} |")
    return "\n".join(lines) + "\n"


def _by_recipe(rows):
    out: dict = {}
    for r in rows:
        out.setdefault((r["kind"], r["model"], r["precision"]), []).append(r)
    return dict(sorted(out.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), help="kind:model pairs")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1")
    ap.add_argument("--precisions", nargs="+", default=["bf16"], choices=["bf16", "no"])
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--judge-seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=0, help="override the recipes' max_train_steps (smoke runs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any config key for every run, e.g. --set int8_base=true")
    ap.add_argument("--work", default="/tmp/judge_fast")
    ap.add_argument("--tag", default="", help="appended to the result file names")
    ap.add_argument("--out", default=default_out())
    ap.add_argument("--render", help="only rewrite the .md table next to this results .json")
    args = ap.parse_args(argv)
    if args.render:
        data = json.loads(Path(args.render).read_text())
        for row in data["rows"]:
            row["replayed"] = _replayed(row)
        Path(args.render).write_text(json.dumps(data, indent=1) + "\n")
        Path(args.render).with_suffix(".md").write_text(_markdown(data["meta"], data["rows"]))
        return 0
    import multiprocessing as mp

    import torch  # the parent only names the card; CUDA is initialised in the children

    card = "cpu"
    if torch.cuda.is_available():
        with mp.get_context("spawn").Pool(1) as probe:
            card = probe.apply(_card_name)
    tag = "h100" if "H100" in card else "h200" if "H200" in card else "gpu" if card != "cpu" else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"judge_fast_{tag}{args.tag}"
    meta = {"card": card, "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "seeds": list(range(args.seeds)), "precisions": args.precisions, "parallel": args.parallel,
            "judge_seeds": args.judge_seeds, "recipes": args.recipes, "steps_override": args.steps or None,
            "set": args.set, "torch": torch.__version__, "cpu_count": os.cpu_count()}
    rows: list[dict] = []
    jobs = _jobs(args)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.parallel, mp_context=mp.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        futures = {pool.submit(_one, job, args.work): job for job in jobs}
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # noqa: BLE001 - keep the sweep going; the row says what broke
                row = dict(job, error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            print(json.dumps({k: row.get(k) for k in ("name", "scores", "all_passed", "train_seconds", "replayed",
                                                      "fast_path_warnings", "error")}), flush=True)
            meta["elapsed_s"] = round(time.perf_counter() - t0, 1)
            stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
            stem.with_suffix(".md").write_text(_markdown(meta, rows))
    print(_markdown(meta, rows))
    return 0


def _card_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


if __name__ == "__main__":
    sys.exit(main())
