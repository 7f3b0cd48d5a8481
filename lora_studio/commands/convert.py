"""`lora-studio convert`."""

from __future__ import annotations

DESCRIPTION = 'Convert a LoRA between diffusers and kohya formats.'


def add_arguments(parser) -> None:
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--to", required=True, choices=["kohya", "diffusers"])
    parser.add_argument("--model", help="base model, to name its family when the file does not say (optional)")
    parser.add_argument("--family", choices=["sd1", "sd2", "sdxl"], help="base family when the file does not say")
    parser.add_argument("--alpha", type=float, help="the alpha the LoRA was trained with, when the file does not say")
    parser.add_argument("--out", required=True, metavar="FILE")


def run(args) -> int:
    from lora_studio.core.lora_files import export_kohya, read_lora, unet_config_for, write_diffusers
    from lora_studio.core.models.loader import resolve_model

    family = args.family or (resolve_model(args.model).family if args.model else None)
    if args.to == "kohya":
        export_kohya(args.file, args.out, family=family, alpha=args.alpha, base_model=args.model)
    else:
        unet_config = unet_config_for(args.model) if args.model else None
        lora = read_lora(args.file, family=family, unet_config=unet_config)
        if args.alpha is not None:
            for m in lora.modules.values():
                m.alpha = args.alpha
        write_diffusers(lora, args.out)
    print(f"wrote {args.out}")
    return 0
