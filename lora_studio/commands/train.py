"""`lora-studio train`."""

from __future__ import annotations

import argparse
import os
import sys

DESCRIPTION = ("Train a LoRA or DreamBooth-LoRA from a TOML config. Several GPUs: `--processes N` (the app "
               "launches accelerate itself, no `accelerate config` needed; without GPUs N CPU processes). "
               "Ctrl-C stops after the current step and saves.")


def add_arguments(parser) -> None:
    parser.add_argument("config", metavar="CONFIG.toml",
                        help="run configuration (TOML); a relative output_dir in it is relative to the file's "
                             "folder, and without one the run goes to LoRA Studio/runs/lora-output in your documents")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.add_argument("--events", metavar="FILE.jsonl", help="also write the run's events as JSON lines")
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="train data-parallel in N processes, one per GPU (CPU processes without GPUs); "
                             "train_batch_size is per process")
    # Set by the launcher for each rank: the file whose appearance asks every rank to stop.
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)


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
                            file=self.stream, dynamic_ncols=True, leave=True,
                            disable=False)  # the app's own bar shows although verbosity.QUIET_ENV sets TQDM_DISABLE
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
        elif isinstance(event, ev.Phase):
            self._line(event.summary())
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
    # Under `accelerate launch` every process runs this command; only rank 0 writes and prints.
    return os.environ.get("RANK", "0") == "0"


def is_launched_rank() -> bool:
    return "RANK" in os.environ or "LOCAL_RANK" in os.environ


def stop_check(flag, stop_file: str | None):
    if not stop_file:
        return flag.is_set
    from lora_studio.core.training.launch import APP_PID_ENV, stop_requested

    app = int(os.environ.get(APP_PID_ENV) or 0)
    return lambda: flag.is_set() or stop_requested(stop_file, app)


MEMORY_CAP_ENV = "LORA_STUDIO_MEMORY_CAP_GIB"


def apply_memory_cap() -> None:
    """``LORA_STUDIO_MEMORY_CAP_GIB=7.5``: this process may use at most that much GPU memory, from its first
    allocation on (loading, class images, caching, training, samples), as if the card were that small."""
    cap = os.environ.get(MEMORY_CAP_ENV, "").strip()
    if not cap:
        return
    import torch

    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, float(cap) * 2**30 / total))


def run(args) -> int:
    from lora_studio import config as config_mod

    apply_memory_cap()  # before any CUDA work, so the cap covers the whole run
    cfg = config_mod.load(args.config)
    if args.processes > 1 and not is_launched_rank():
        return run_processes(args, cfg)
    return run_here(args, cfg)


def run_processes(args, cfg) -> int:
    from lora_studio.core.training.launch import LaunchFailed, train_processes

    display = ProgressDisplay()
    flag, restore = stop_on_interrupt()
    try:
        result = train_processes(cfg, display, flag.is_set, processes=args.processes, resume=args.resume,
                                 events_path=os.path.abspath(args.events) if args.events else None,
                                 config_path=args.config)
    except LaunchFailed:
        return 1  # the Failed event has been shown
    finally:
        restore()
        display.close()
    _report(result)
    return 0


def run_here(args, cfg) -> int:
    from lora_studio.core.events import JsonlWriter
    from lora_studio.core.training.engine import TrainingFailed, train

    display = ProgressDisplay()
    writer = JsonlWriter(args.events, forward=display) if args.events and is_main_process() else None
    emit = writer or display
    flag, restore = stop_on_interrupt()
    try:
        result = train(cfg, emit, stop_check(flag, args.stop_file), resume=args.resume)
    except TrainingFailed as exc:
        if not is_main_process():  # only rank 0 emits events: the launcher reads this rank's error in its log
            import traceback

            traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
            print(f"error: {exc}", file=sys.stderr)
        return 1  # the Failed event has been shown
    finally:
        restore()
        display.close()
        if writer is not None:
            writer.close()
    if is_main_process():
        _report(result)
    return 0


def _report(result: dict) -> None:
    if result.get("adapter_path"):
        state = "stopped at" if result["stopped"] else "finished after"
        main_file = result.get("lora_path") or result["adapter_path"]
        print(f"{state} step {result['steps']}/{result['total_steps']}: {main_file}")
        if result.get("lora_path"):
            print(f"  for diffusers' load_lora_weights(folder): {result['adapter_path']}")
    return 0
