"""`lora-studio gui`."""

from __future__ import annotations

DESCRIPTION = ("Open the LoRA Studio window. With --screenshot it renders the window to a PNG and exits "
               "(offscreen when there is no display).")


def add_arguments(parser) -> None:
    parser.add_argument("--screenshot", metavar="PNG", help="render the window offscreen to PNG and exit")
    parser.add_argument("--tab", choices=["dataset", "training", "preview"], default="dataset",
                        help="tab to show (with --screenshot)")
    parser.add_argument("--dataset", metavar="DIR", help="open this dataset folder")
    parser.add_argument("--config", metavar="TOML", help="load this run config")
    parser.add_argument("--model", metavar="M", help="base model: a folder, a checkpoint file, or 'demo'")
    parser.add_argument("--run", metavar="DIR", help="show a finished run (its output folder with events.jsonl)")
    parser.add_argument("--lora", metavar="FILE[:WEIGHT]", action="append",
                        help="add a LoRA to the Preview tab (repeatable)")
    parser.add_argument("--prompt", help="preview prompt")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for a preview (--screenshot)")


def window_can_open(environ=None) -> None:
    """Before Qt aborts (exit 134, blaming xcb-cursor0 and suggesting a reinstall): say which system libraries
    its X11 plugin misses and how to install them. Only where Qt would pick that plugin."""
    import os
    import sys

    from lora_studio import qt_check
    from lora_studio.errors import LoraStudioError

    env = os.environ if environ is None else environ
    platform = env.get("QT_QPA_PLATFORM", "")
    x11 = platform == "xcb" or (not platform and env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"))
    plugin = qt_check.xcb_plugin() if sys.platform.startswith("linux") and x11 else None
    missing = qt_check.missing_libraries(qt_check.ldd(plugin)) if plugin else []
    if missing:
        manager = qt_check.package_manager()
        result = qt_check.QtCheck(ok=False, missing=missing, packages=qt_check.packages_for(missing, manager),
                                  manager=manager)
        lines = result.text().splitlines()
        raise LoraStudioError(" ".join(lines[:2]), " ".join(lines[2:]))


def run(args) -> int:
    if not args.screenshot:
        window_can_open()
    from lora_studio.gui.app import run as run_app

    return run_app(args)
