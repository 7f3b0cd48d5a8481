"""`lora-studio demo`."""

from __future__ import annotations

DESCRIPTION = ("The main job on the embedded default: DreamBooth-LoRA with prior preservation on the demo subject "
               "set and the demo model (class images generated on the way), then a before/after grid, a loss plot "
               "and the judge's scores, all in --out.")


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="lora-studio-demo", help="output folder (default: ./lora-studio-demo)")


def format_summary(summary: dict) -> str:
    lines = [f"LoRA Studio demo: {summary['steps']} steps of DreamBooth-LoRA (rank {summary['rank']}, "
             f"alpha {summary['alpha']:g}) on the demo model, {summary['class_images']} class images",
             f"  adapter     {summary['adapter']}"]
    if summary.get("kohya"):
        lines.append(f"  kohya       {summary['kohya']}")
    if summary.get("grid"):
        lines.append(f"  before/after {summary['grid']}")
    lines.append(f"  loss plot   {summary['loss_plot']}")
    lines.append(f"  summary     {summary['summary']}")
    if "scores" in summary:
        names = {"subject_at_1": "'a photo of sks shape', LoRA 1", "subject_at_0.5": "'a photo of sks shape', LoRA 0.5",
                 "subject_at_0": "'a photo of sks shape', LoRA 0",
                 "class_prompt_subject_at_1": "'a shape' (class), LoRA 1"}
        lines.append(f"  judge, share of {summary['judge_seeds']} seeds showing the subject:")
        for key, label in names.items():
            wanted = f"(wanted {summary['bars'][key]})  {'ok' if summary['passed'][key] else 'MISSED'}" \
                if key in summary["bars"] else ""
            lines.append(f"    {label:<34} {summary['scores'][key]:6.1%}   {wanted}".rstrip())
    lines.append(f"  time        {summary['total_seconds']:.0f} s (training {summary['train_seconds']:.0f} s)")
    return "\n".join(lines)


def run(args) -> int:
    from lora_studio.commands.train import ProgressDisplay, stop_on_interrupt
    from lora_studio.core.training.demo import run_demo
    from lora_studio.core.training.engine import TrainingFailed

    import os

    display = ProgressDisplay()
    flag, restore = stop_on_interrupt()
    try:
        summary = run_demo(os.path.abspath(args.out), display, flag)  # absolute: every path it prints is too
    except TrainingFailed:
        return 1
    finally:
        restore()
        display.close()
    print(format_summary(summary))
    if summary["stopped"]:
        print("stopped before the end; run `lora-studio demo` again to start over.")
    return 0
