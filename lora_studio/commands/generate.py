"""`lora-studio generate`."""

from __future__ import annotations

import argparse

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
    parser.add_argument("--scheduler", default="euler", help="euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ddim, unipc")
    parser.add_argument("--grid-weights", metavar="W,W,...", help="instead of one image: a grid, rows = these weights of "
                        "the first --lora, columns = --grid-seeds")
    parser.add_argument("--grid-seeds", metavar="S,S,...", help="seeds for the grid columns (default: --seed)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    parser.add_argument("--low-memory", action=argparse.BooleanOptionalAction, default=None,
                        help="text encoders and weight snapshots in system memory, VAE decoded in tiles (default: on "
                        "for SDXL on cards under 16 GiB and SD 1.5 under 6 GiB)")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                        help="store the UNet's large weights in 8 bits (SDXL's UNet 4.8 -> 2.7 GiB; pictures differ "
                        "slightly; default: on for SDXL on cards under 10 GiB)")
    parser.add_argument("--out", required=True, metavar="PNG")


def parse_lora(spec: str, default: float = 1.0) -> tuple[str, float]:
    """'file.safetensors:0.8' -> (file, 0.8); a Windows drive colon or a bare path keeps the default weight."""
    from lora_studio.errors import LoraStudioError

    path, sep, weight = spec.rpartition(":")
    if sep and path and not weight.startswith(("\\", "/")):
        try:
            return path, float(weight)
        except ValueError:
            raise LoraStudioError(f"--lora {spec}: {weight!r} is not a weight.", "write FILE:WEIGHT, e.g. style.safetensors:0.8") from None
    return spec, default


def run(args) -> int:
    import sys
    from pathlib import Path

    from lora_studio.core.events import Progress
    from lora_studio.core.inference.engine import PreviewEngine, PreviewRequest
    from lora_studio.core.io import write_with

    loras = [parse_lora(s) for s in args.lora]
    engine = PreviewEngine(args.model, device=args.device, low_memory=args.low_memory, int8_unet=args.int8)
    names = []
    for i, (path, weight) in enumerate(loras):
        names.append(engine.add_lora(path, f"lora{i}_{Path(path).stem}", weight))
    request = PreviewRequest(args.prompt, args.negative, args.seed, args.steps, args.guidance, args.width,
                             args.height, args.scheduler)

    def emit(event):
        if isinstance(event, Progress):
            print(f"\rstep {event.step}/{event.total}", end="", file=sys.stderr, flush=True)

    if args.grid_weights:
        from lora_studio.errors import LoraStudioError

        if not names:
            raise LoraStudioError("--grid-weights needs a --lora.", "add --lora FILE.")
        weights = [float(w) for w in args.grid_weights.split(",")]
        seeds = [int(s) for s in args.grid_seeds.split(",")] if args.grid_seeds else [args.seed]
        image = engine.weight_grid(request, names[0], weights, seeds, emit=emit)
    else:
        image = engine.generate(request, emit=emit)
    print(file=sys.stderr)
    write_with(args.out, lambda tmp: image.save(tmp, format="PNG"))
    print(f"wrote {args.out}")
    return 0
