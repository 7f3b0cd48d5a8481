"""`lora-studio train`."""

from __future__ import annotations

DESCRIPTION = 'Train a LoRA or DreamBooth-LoRA from a TOML config.'


def add_arguments(parser) -> None:
    parser.add_argument("config", metavar="CONFIG.toml", help="run configuration (TOML)")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.add_argument("--events", metavar="FILE.jsonl", help="also write the run's events as JSON lines")


def run(args) -> int:
    from lora_studio.errors import LoraStudioError

    raise LoraStudioError("`lora-studio train` is not built yet (issue 4).")
