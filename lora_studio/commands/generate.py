"""`lora-studio generate`."""

from __future__ import annotations

DESCRIPTION = 'Generate an image from a base model and optional LoRAs.'


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="diffusers folder, .safetensors/.ckpt file, 'demo' or 'demo-xl'")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]", help="LoRA file and weight (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--scheduler", default="euler", help="euler, euler_a, dpmpp_2m_karras, ddim")
    parser.add_argument("--out", required=True, metavar="PNG")


def run(args) -> int:
    from lora_studio.errors import LoraStudioError

    raise LoraStudioError("`lora-studio generate` is not built yet (issue 5).")
