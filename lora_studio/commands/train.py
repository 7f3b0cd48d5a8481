"""`lora-studio train`."""

from __future__ import annotations

import sys

DESCRIPTION = ("Train a LoRA or DreamBooth-LoRA from a TOML config. Several GPUs: "
               "`accelerate launch --num_processes N -m lora_studio train CONFIG.toml` (only the main "
               "process writes files and events). Ctrl-C stops after the current step and saves.")


def add_arguments(parser) -> None:
    parser.add_argument("config", metavar="CONFIG.toml", help="run configuration (TOML)")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.add_argument("--events", metavar="FILE.jsonl", help="also write the run's events as JSON lines")


class ProgressDisplay:
    """Events -> a tqdm bar per phase on the terminal; warnings and failures as lines."""

    PHASES = {"train": "training", "class_images": "class images", "cache": "caching", "generate": "generating"}

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.phase = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        from lora_studio.core import events as ev

        if isinstance(event, ev.Started):
            self.close()
            self.phase = event.phase
            self.bar = tqdm(total=event.total_steps, desc=self.PHASES.get(event.phase, event.phase),
                            file=self.stream, dynamic_ncols=True, leave=True)
        elif isinstance(event, ev.Progress) and self.bar is not None:
            self.bar.n = event.step
            if event.loss is not None:
                post = {"loss": f"{event.loss:.4f}"}
                if event.lr is not None:
                    post["lr"] = f"{event.lr:.2e}"
                if event.vram_peak:
                    post["vram"] = f"{event.vram_peak / 2**30:.1f}G"
                self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
        elif isinstance(event, ev.Warning):
            self._line(f"warning: {event.msg}")
        elif isinstance(event, ev.Checkpoint):
            self._line(f"checkpoint: {event.path}")
        elif isinstance(event, ev.Sample):
            self._line(f"sample: {event.path}")
        elif isinstance(event, ev.Failed):
            self.close()
            self._line(f"error: {event.message}")
            if event.advice:
                self._line(f"what to do: {event.advice}")
        elif isinstance(event, ev.Finished):
            self.close()

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def stop_on_interrupt():
    """A stop flag set by the first Ctrl-C (the run saves and ends); a second Ctrl-C interrupts at once."""
    import signal
    import threading

    flag = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if flag.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag.set()
        print("\nstopping after this step (Ctrl-C again to abort without saving)...", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():
        return flag, lambda: None
    signal.signal(signal.SIGINT, handler)
    return flag, lambda: signal.signal(signal.SIGINT, previous)


def is_main_process() -> bool:
    import os

    # Under `accelerate launch` every process runs this command; only rank 0 writes and prints.
    return os.environ.get("RANK", "0") == "0"


def run(args) -> int:
    from lora_studio import config as config_mod
    from lora_studio.core.events import JsonlWriter
    from lora_studio.core.training.engine import TrainingFailed, train

    cfg = config_mod.load(args.config)
    display = ProgressDisplay()
    writer = JsonlWriter(args.events, forward=display) if args.events and is_main_process() else None
    emit = writer or display
    flag, restore = stop_on_interrupt()
    try:
        result = train(cfg, emit, flag, resume=args.resume)
    except TrainingFailed:
        return 1  # the Failed event has been shown
    finally:
        restore()
        display.close()
        if writer is not None:
            writer.close()
    if result.get("adapter_path") and is_main_process():
        state = "stopped at" if result["stopped"] else "finished after"
        main_file = result.get("lora_path") or result["adapter_path"]
        print(f"{state} step {result['steps']}/{result['total_steps']}: {main_file}")
        if result.get("lora_path"):
            print(f"  for diffusers' load_lora_weights(folder): {result['adapter_path']}")
    return 0
