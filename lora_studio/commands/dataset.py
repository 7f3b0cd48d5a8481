"""`lora-studio dataset check DIR`."""

from __future__ import annotations

DESCRIPTION = "Dataset tools. `check DIR` reports bad images, missing captions and the bucket plan; it changes no file."


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="pre-flight report of a dataset folder",
                           description="Report bad images, caption problems and the aspect-ratio bucket plan. "
                           "Exits non-zero when a problem would stop training. Changes no file.")
    check.add_argument("dir", metavar="DIR")
    check.add_argument("--model", metavar="M", default=None,
                       help="the base model you will train on (folder, .safetensors, 'demo', 'demo-xl'): the buckets "
                       "are then exactly the ones training uses for it, and --resolution defaults to its native size")
    check.add_argument("--resolution", type=int, default=None,
                       help="training resolution (default: the model's native size, else 512)")
    check.add_argument("--sdxl", action="store_true", help="without --model: SDXL bucket steps (32 px)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--no-upscale", action="store_true",
                       help="plan buckets without upscaling small images (they get smaller buckets)")
    check.add_argument("--min-side", type=int, default=None, metavar="PX",
                       help="smallest bucket side (default resolution/4)")
    check.add_argument("--max-side", type=int, default=None, metavar="PX",
                       help="largest bucket side (default resolution*2)")
    check.add_argument("--no-buckets", action="store_true",
                       help="as enable_bucket = false: every picture is cropped to the square")


def run(args) -> int:
    import json

    from lora_studio.core.dataset import check_dataset

    resolution = args.resolution
    if resolution is None:
        resolution = 512
        if args.model is not None:
            from lora_studio.core.models.loader import resolve_model
            from lora_studio.core.models.native import native_resolution

            resolution = native_resolution(resolve_model(args.model))
    report = check_dataset(args.dir, resolution, args.sdxl, no_upscale=args.no_upscale,
                           min_side=args.min_side, max_side=args.max_side, model=args.model,
                           enable_bucket=not args.no_buckets)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.format_text())
    return 0 if report.ok else 1
