"""`lora-studio merge`."""

from __future__ import annotations

DESCRIPTION = 'Merge LoRAs into one file, or fuse them into a full model.'


def add_arguments(parser) -> None:
    parser.add_argument("--lora", action="append", required=True, metavar="FILE:WEIGHT", help="LoRA and weight (repeatable)")
    parser.add_argument("--out", help="merged LoRA file (.safetensors)")
    parser.add_argument("--rank", type=int, default=0, help="compress to this rank by SVD (0 = exact, ranks concatenated)")
    parser.add_argument("--model", help="base model to fuse into")
    parser.add_argument("--fuse-out", help="folder (diffusers) or .safetensors file (single-file) for the fused model")


def run(args) -> int:
    from lora_studio.errors import LoraStudioError

    raise LoraStudioError("`lora-studio merge` is not built yet (issue 5).")
