"""`lora-studio convert`."""

from __future__ import annotations

DESCRIPTION = 'Convert a LoRA between diffusers and kohya formats.'


def add_arguments(parser) -> None:
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--to", required=True, choices=["kohya", "diffusers"])
    parser.add_argument("--model", help="base model, to name its family when the file does not say (optional)")
    parser.add_argument("--out", required=True, metavar="FILE")


def run(args) -> int:
    from lora_studio.errors import LoraStudioError

    raise LoraStudioError("`lora-studio convert` is not built yet (issue 5).")
