"""`lora-studio demo`."""

from __future__ import annotations

DESCRIPTION = 'The main job on the embedded default: DreamBooth-LoRA with prior preservation on the demo subject set and the demo model, then a before/after grid, a loss plot and judged scores.'


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="lora-studio-demo", help="output folder (default: ./lora-studio-demo)")


def run(args) -> int:
    from lora_studio.errors import LoraStudioError

    raise LoraStudioError("`lora-studio demo` is not built yet (issue 4).")
