"""`lora-studio merge`."""

from __future__ import annotations

DESCRIPTION = 'Merge LoRAs into one file, or fuse them into a full model.'


def add_arguments(parser) -> None:
    parser.add_argument("--lora", action="append", required=True, metavar="FILE:WEIGHT", help="LoRA and weight (repeatable)")
    parser.add_argument("--out", help="merged LoRA file (.safetensors)")
    parser.add_argument("--rank", type=int, default=0, help="compress to this rank by SVD (0 = exact, ranks concatenated)")
    parser.add_argument("--format", choices=["diffusers", "kohya"], default="diffusers", help="format of --out")
    parser.add_argument("--model", help="base model to fuse into")
    parser.add_argument("--fuse-out", help="folder (diffusers) or .safetensors file (single-file) for the fused model")


def run(args) -> int:
    from lora_studio.commands.generate import parse_lora
    from lora_studio.errors import LoraStudioError

    items = [parse_lora(s) for s in args.lora]
    if not args.out and not args.fuse_out:
        raise LoraStudioError("nothing to write.", "give --out FILE (merged LoRA) and/or --model M --fuse-out PATH.")
    if args.fuse_out and not args.model:
        raise LoraStudioError("--fuse-out needs --model.", "name the base model to fuse the LoRAs into.")
    if args.out:
        from lora_studio.core.inference.merge import merge, save_merged
        from lora_studio.core.lora_files import unet_config_for

        unet_config = unet_config_for(args.model) if args.model else None
        result = merge(items, rank=args.rank, unet_config=unet_config)
        save_merged(result, args.out, fmt=args.format, unet_config=unet_config)
        ranks = result.lora.ranks
        print(f"wrote {args.out}: {len(result.lora.modules)} layers, rank {ranks[-1] if ranks else 0}")
        if args.rank:
            print(f"SVD relative error: {result.relative_error:.4%} "
                  f"(worst layer {result.worst_layer_error:.4%}: {result.worst_layer})")
    if args.fuse_out:
        from lora_studio.core.inference.merge import fuse_and_save

        out = fuse_and_save(args.model, items, args.fuse_out)
        print(f"wrote fused model {out}")
    return 0
