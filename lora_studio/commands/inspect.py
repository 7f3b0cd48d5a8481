"""`lora-studio inspect`."""

from __future__ import annotations

DESCRIPTION = 'Show format, base architecture, rank, alpha, target modules and metadata of a LoRA or checkpoint.'


def add_arguments(parser) -> None:
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import json
    from pathlib import Path

    from lora_studio.core.lora_files import inspect_file
    from lora_studio.core.models.loader import resolve_model

    if Path(args.file).is_dir() or args.file in ("demo", "demo-xl"):
        ref = resolve_model(args.file)
        info = {"file": str(ref.path), "kind": ref.kind, "family": ref.family, "family_name": ref.family_name,
                "variant": ref.variant}
    else:
        info = inspect_file(args.file)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
        return 0
    meta = info.pop("metadata", {})
    for key, value in info.items():
        print(f"{key:>22}: {value}")
    if info.get("kind") == "lora":
        from lora_studio.core.lora_files.inspect import training_summary

        for label, value in training_summary(meta):
            print(f"{label:>22}: {value}")
    if meta:
        print("              metadata:")
        for key in sorted(meta):
            value = meta[key] if len(meta[key]) <= 200 else meta[key][:200] + "..."
            print(f"    {key}: {value}")
    return 0
