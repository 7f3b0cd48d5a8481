"""`lora-studio gui`."""

from __future__ import annotations

DESCRIPTION = 'Open the LoRA Studio window.'


def add_arguments(parser) -> None:
    parser.add_argument("--screenshot", metavar="PNG", help="render the window offscreen to PNG and exit")
    parser.add_argument("--tab", choices=["dataset", "training", "preview"], default="dataset",
                        help="tab to show (with --screenshot)")


def run(args) -> int:
    from lora_studio.errors import LoraStudioError

    raise LoraStudioError("`lora-studio gui` is not built yet (issue 6).")
