"""`lora-studio gui`."""

from __future__ import annotations

DESCRIPTION = ("Open the LoRA Studio window. With --screenshot it renders the window to a PNG and exits "
               "(offscreen when there is no display).")


def add_arguments(parser) -> None:
    parser.add_argument("--screenshot", metavar="PNG", help="render the window offscreen to PNG and exit")
    parser.add_argument("--tab", choices=["dataset", "training", "preview"], default="dataset",
                        help="tab to show (with --screenshot)")
    parser.add_argument("--dataset", metavar="DIR", help="open this dataset folder")
    parser.add_argument("--config", metavar="TOML", help="load this run config")
    parser.add_argument("--model", metavar="M", help="base model: a folder, a checkpoint file, or 'demo'")
    parser.add_argument("--run", metavar="DIR", help="show a finished run (its output folder with events.jsonl)")
    parser.add_argument("--lora", metavar="FILE[:WEIGHT]", action="append",
                        help="add a LoRA to the Preview tab (repeatable)")
    parser.add_argument("--prompt", help="preview prompt")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for a preview (--screenshot)")


def run(args) -> int:
    from lora_studio.gui.app import run as run_app

    return run_app(args)
