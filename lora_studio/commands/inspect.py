"""`lora-studio inspect`."""

from __future__ import annotations

DESCRIPTION = 'Show format, base architecture, rank, alpha, target modules and metadata of a LoRA or checkpoint.'


def add_arguments(parser) -> None:
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    from lora_studio.errors import LoraStudioError

    raise LoraStudioError("`lora-studio inspect` is not built yet (issue 5).")
