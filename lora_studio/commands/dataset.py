"""`lora-studio dataset check DIR`."""

from __future__ import annotations

DESCRIPTION = "Dataset tools. `check DIR` reports bad images, missing captions and the bucket plan; it changes no file."


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="pre-flight report of a dataset folder",
                           description="Report bad images, caption problems and the aspect-ratio bucket plan. "
                           "Exits non-zero when a problem would stop training. Changes no file.")
    check.add_argument("dir", metavar="DIR")
    check.add_argument("--resolution", type=int, default=512, help="training resolution (default 512)")
    check.add_argument("--sdxl", action="store_true", help="SDXL bucket steps (32 px)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    from lora_studio.errors import LoraStudioError

    raise LoraStudioError("`lora-studio dataset check` is being built (issue 2).")
