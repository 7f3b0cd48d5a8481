"""`lora-studio demo`."""

from __future__ import annotations

DESCRIPTION = ("The main job on the embedded default: DreamBooth-LoRA with prior preservation on the demo subject "
               "set and the demo model (class images generated on the way), then a before/after picture, a loss "
               "plot and the judge's scores, all in --out.")


def add_arguments(parser) -> None:
    from lora_studio.core.demo.recipe import SEED

    parser.add_argument("--out", default="lora-studio-demo", help="output folder (default: ./lora-studio-demo)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help=f"training seed (default: {SEED}, the shipped one); the judged pictures keep theirs")


def format_summary(summary: dict) -> str:
    lines = [f"LoRA Studio demo: {summary['steps']} steps of DreamBooth-LoRA (rank {summary['rank']}, "
             f"alpha {summary['alpha']:g}, training seed {summary.get('seed', 0)}) on the demo model, "
             f"{summary['class_images']} class images",
             f"  adapter     {summary['adapter']}"]
    if summary.get("kohya"):
        lines.append(f"  kohya       {summary['kohya']}")
    if summary.get("grid"):
        lines.append(f"  before/after {summary['grid']}")
    lines.append(f"  loss plot   {summary['loss_plot']}")
    lines.append(f"  summary     {summary['summary']}")
    if "scores" in summary:
        lines += _judged(summary)
    lines.append(f"  time        {summary['total_seconds']:.0f} s (training {summary['train_seconds']:.0f} s)")
    if summary.get("verdict"):
        lines.append(summary["verdict"])
    return "\n".join(lines)


def _judged(summary: dict) -> list[str]:
    scores, cont = summary["scores"], summary.get("subject_scores") or {}
    subject = sorted((k for k in scores if k.startswith("subject_at_")), key=lambda k: float(k.rsplit("_", 1)[1]))
    rows = [(k, f"'a photo of sks shape', LoRA {k.rsplit('_', 1)[1]}") for k in subject]
    rows.append(("class_prompt_subject_at_1", "'a shape' (class), LoRA 1"))
    how = f"{summary['judge_seeds']} seeds"
    if "guidance" in summary:  # so a user can make the same pictures in the Preview tab
        how += f", {summary['judge_steps']} steps, guidance {summary['guidance']:g}"
    lines = [f"  judge, {how}: share showing the subject, and the subject score (0 = a plain shape, 1 = the "
             "subject)"]
    for key, label in rows:
        if key not in scores:
            continue
        wanted = (f"(wanted {summary['bars'][key]})  {'ok' if summary['passed'][key] else 'MISSED'}"
                  if key in summary["bars"] else "")
        score = f"{cont[key]:5.2f}" if key in cont else "     "
        lines.append(f"    {label:<34} {scores[key]:6.1%}  {score}   {wanted}".rstrip())
    if "rises_with_weight" in summary["passed"]:
        ok = summary["passed"]["rises_with_weight"]
        lines.append(f"    subject score rises with the weight ({summary['bars']['rises_with_weight']})  "
                     f"{'ok' if ok else 'MISSED'}")
    return lines


def run(args) -> int:
    from lora_studio.commands.train import ProgressDisplay, stop_on_interrupt
    from lora_studio.core.demo.run import run_demo
    from lora_studio.core.training.engine import TrainingFailed

    import os

    display = ProgressDisplay()
    flag, restore = stop_on_interrupt()
    try:
        summary = run_demo(os.path.abspath(args.out), display, flag, seed=args.seed)  # absolute: every path it prints is too
    except TrainingFailed:
        return 1
    finally:
        restore()
        display.close()
    print(format_summary(summary))
    if summary["stopped"]:
        print("stopped before the end; run `lora-studio demo` again to start over.")
    return 0
