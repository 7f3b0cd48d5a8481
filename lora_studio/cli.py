"""`lora-studio`: the app (no subcommand) and the headless subcommands of ARCHITECTURE.md.

Each subcommand lives in lora_studio/commands/<name>.py with ``add_arguments(parser)`` and
``run(args) -> int``; heavy imports (torch, diffusers, Qt) happen inside ``run`` so --help is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lora_studio import __version__

COMMANDS = [
    ("gui", "open the app (or render it offscreen to a PNG with --screenshot)"),
    ("demo", "the main job on the embedded demo: train a DreamBooth-LoRA, preview before/after, judge"),
    ("train", "train a LoRA / DreamBooth-LoRA from a TOML config"),
    ("generate", "generate an image with a base model and LoRAs"),
    ("merge", "merge LoRAs into one file, or fuse them into a full model"),
    ("inspect", "show format, base architecture, rank, alpha and metadata of a LoRA or checkpoint"),
    ("convert", "convert a LoRA between diffusers and kohya formats"),
    ("dataset", "dataset tools: check a folder before training"),
    ("caption", "draft captions with a local captioning model (or the demo captioner)"),
    ("judge", "score pictures with the demo world's judge against their prompts"),
]


VERBOSE_HELP = "also show the libraries' own messages: warnings, deprecation notices, loading progress bars"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-studio",
        description="LoRA Studio: train LoRA and DreamBooth-LoRA adapters for Stable Diffusion 1.5 and SDXL, "
        "and preview them. Without a subcommand it opens the app.",
    )
    parser.add_argument("--version", action="version", version=f"lora-studio {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", dest="verbose_all", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS:
        module = importlib.import_module(f"lora_studio.commands.{name}")
        p = sub.add_parser(name, help=help_text, description=getattr(module, "DESCRIPTION", help_text))
        module.add_arguments(p)
        _add_verbose(p)
        p.set_defaults(_module=module)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """--verbose after any (sub)command too; SUPPRESS so a nested parser's default cannot undo an outer flag."""
    parser.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                _add_verbose(nested)


# Commands after which the process may end without the interpreter's teardown (see ``entry``). Not the app:
# Qt writes its settings and closes its windows as its objects are destroyed.
QUICK_EXIT = {"demo", "train", "generate", "merge", "inspect", "convert", "dataset", "caption", "judge"}
_ran: list[str] = []  # the command main() ran, for entry()


def entry() -> None:
    """The console script and ``python -m lora_studio``: run the command, then end the process at once.

    Tearing torch, diffusers and transformers down module by module took ~1.8 s after every training run
    (bench/NOTES.md), seconds a user waits for nothing: every file is written and closed before a command
    returns, so only the standard streams and logging need flushing first."""
    import logging
    import os

    code = main()
    if _ran and _ran[-1] in QUICK_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = args.verbose_all
    if args.command is None:
        args = parser.parse_args(["gui"])
    _ran.append(args.command)
    from lora_studio import verbosity

    verbosity.apply(verbose or getattr(args, "verbose", False))
    from lora_studio.core.system import allocator_defaults, compile_cache_defaults

    allocator_defaults()  # before any command starts CUDA (its workers and `accelerate launch` inherit it)
    compile_cache_defaults()
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # the user's last line of defence: say what happened, no traceback
        from lora_studio.errors import describe

        message, advice = describe(exc)
        print(f"error: {message}", file=sys.stderr)
        if advice:
            print(f"what to do: {advice}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    entry()
