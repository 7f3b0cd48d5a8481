"""Several processes (one per GPU, or CPU processes with gloo) launched by the app itself.

The app writes an accelerate config file into ``<output_dir>/launch/`` and starts
``python -m accelerate.commands.launch --config_file ... -m lora_studio train CONFIG``: no
``accelerate config`` step, ever. Every rank runs the same engine; rank 0 writes the events file, which the
parent tails and re-emits as the same typed events, so a several-process run looks like an in-process one.

Stop: the parent creates ``launch/STOP``; every rank checks it between steps and the engine all-reduces the
flag, so all ranks stop at the same step and rank 0 saves the same checkpoint one process would. The ranks
also stop (and save) if the app dies without asking: they watch its process id.
A crash: torch's elastic agent (accelerate's multi-GPU launcher) ends the other ranks; the parent reports
one ``Failed`` naming the rank and its last stderr lines. Checkpoints and adapters are written atomically,
so a killed run leaves the last complete checkpoint for ``--resume``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from lora_studio.core import events as ev
from lora_studio.errors import LoraStudioError

LAUNCH_DIR = "launch"
STOP_FILE = "STOP"
APP_PID_ENV = "LORA_STUDIO_APP_PID"  # the ranks stop (and save) if the app that launched them is gone
POLL_S = 0.2
STDERR_LINES = 12


class LaunchFailed(LoraStudioError):
    """A several-process run ended on an error; its ``Failed`` event was already emitted."""


def launch_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / LAUNCH_DIR


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_processes(processes: int, gpus: int) -> None:
    if processes < 1:
        raise LoraStudioError(f"--processes must be 1 or more (got {processes}).",
                              "Use --processes N with N up to the number of GPUs.")
    if gpus and processes > gpus:
        raise LoraStudioError(f"--processes {processes} asks for more processes than this machine's {gpus} GPU(s).",
                              f"Use --processes {gpus} or fewer: each process trains on its own GPU.")


def accelerate_config(processes: int, mixed_precision: str, cpu: bool, port: int) -> dict[str, Any]:
    # accelerate's MULTI_CPU type needs mpirun; its multi-GPU launcher (torch's elastic agent) also starts
    # CPU processes, which then join with gloo because the engine asks for cpu=True without CUDA.
    # "auto" is ours, not accelerate's: each rank's engine resolves it for its card and passes the result to
    # Accelerator(), whose argument wins over the launcher's value.
    if mixed_precision == "auto":
        mixed_precision = "no"
    return {"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU", "num_processes": processes,
            "num_machines": 1, "machine_rank": 0, "gpu_ids": "all", "mixed_precision": mixed_precision,
            "use_cpu": cpu, "main_process_ip": "127.0.0.1", "main_process_port": port,
            "rdzv_backend": "static", "same_network": True, "debug": False}


def write_accelerate_config(folder: Path, processes: int, mixed_precision: str, cpu: bool) -> Path:
    from lora_studio.core.io import write_text

    path = folder / "accelerate_config.json"
    write_text(path, json.dumps(accelerate_config(processes, mixed_precision, cpu, free_port()), indent=2) + "\n")
    return path


def launch_command(accelerate_config_path: Path, log_dir: Path, config_path: str | os.PathLike,
                   events_path: str | os.PathLike, stop_path: str | os.PathLike, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config_path),
           "--tee", "3", "--log_dir", str(log_dir),
           "-m", "lora_studio", "train", str(config_path), "--events", str(events_path), "--stop-file", str(stop_path)]
    return cmd + (["--resume"] if resume else [])


def child_env() -> dict[str, str]:
    import lora_studio

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The ranks run the very code this process runs, whatever put it on the path.
    root = str(Path(lora_studio.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("RANK", None)
    env[APP_PID_ENV] = str(os.getpid())
    return env


def stop_requested(stop_file: str | os.PathLike, app_pid: int | None) -> bool:
    """A rank's stop check: the app asked (the stop file), or the app died without asking."""
    if os.path.exists(stop_file):
        return True
    if app_pid:
        try:
            os.kill(app_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return False


class EventTail:
    """Reads the complete lines rank 0 appends to its events file, from the offset the run started at."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.buffer = b""

    def read(self) -> list:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(ev.from_json(line.decode("utf-8")))
            except ValueError:
                continue  # a line cut short by a killed rank 0
        return out


def root_cause(launcher_log: str) -> tuple[int | None, str]:
    """(rank, how it ended) of the first failure torch's elastic agent reports; (None, "") if none."""
    cause = launcher_log.rsplit("Root Cause", 1)
    if len(cause) != 2:
        return None, ""
    rank = re.search(r"rank\s*:\s*(\d+)", cause[1])
    code = re.search(r"exitcode\s*:\s*(-?\d+)[^\n(]*(?:\(pid[^)]*\))?\s*(\(\w+\))?", cause[1])
    words = ""
    if code:
        words = f"exit code {code.group(1)}" + (f", {code.group(2).strip('()')}" if code.group(2) else "")
    return (int(rank.group(1)) if rank else None), words


def rank_stderr(log_dir: Path, rank: int, lines: int = STDERR_LINES) -> str:
    found = sorted(log_dir.glob(f"*/attempt_*/{rank}/stderr.log"), key=lambda p: p.stat().st_mtime)
    if not found:
        return ""
    text = found[-1].read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


class MultiProcessRun:
    """One launch of ``processes`` ranks; ``run(emit, stop)`` streams events and returns the result."""

    def __init__(self, config_path: str | os.PathLike, output_dir: str | os.PathLike, processes: int,
                 mixed_precision: str = "no", resume: bool = False, events_path: str | os.PathLike | None = None,
                 cpu: bool | None = None):
        self.processes = processes
        self.folder = launch_dir(output_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.output_dir = Path(output_dir)
        self.events_path = Path(events_path) if events_path else self.folder / "events.jsonl"
        self.stop_path = self.folder / STOP_FILE
        self.log_dir = self.folder / "logs"
        self.launcher_log = self.folder / "launcher.log"
        cpu = gpu_count() == 0 if cpu is None else cpu
        check_processes(processes, 0 if cpu else gpu_count())
        acc_path = write_accelerate_config(self.folder, processes, mixed_precision, cpu)
        self.command = launch_command(acc_path, self.log_dir, Path(config_path).resolve(), self.events_path,
                                      self.stop_path, resume)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.stop_path.unlink(missing_ok=True)
        self.tail = EventTail(self.events_path)
        with open(self.launcher_log, "wb") as log:
            # Its own session: a terminal's Ctrl-C reaches only the parent, which asks the ranks to stop.
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                                         start_new_session=True)

    def request_stop(self) -> None:
        self.stop_path.touch()

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the launcher and every rank it started
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def run(self, emit: ev.Emit, stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        self.start()
        seen: list = []
        try:
            while True:
                code = self.proc.poll()
                for event in self.tail.read():
                    seen.append(event)
                    if not isinstance(event, ev.Failed):  # held back: a crashed rank may be the real cause
                        emit(event)
                if code is not None:
                    break
                if stop() and not self.stop_path.exists():
                    self.request_stop()
                time.sleep(POLL_S)
        except BaseException:
            self.kill()
            raise
        self.kill()  # nothing outlives the launcher (a rank stuck in a collective, say)
        self.stop_path.unlink(missing_ok=True)
        return self.outcome(code, seen, emit)

    def outcome(self, code: int, seen: list, emit: ev.Emit) -> dict[str, Any]:
        finished = [e for e in seen if isinstance(e, ev.Finished)]
        failed = [e for e in seen if isinstance(e, ev.Failed)]
        if code == 0 and finished:
            return dict(finished[-1].result)
        log = self.launcher_log.read_text(encoding="utf-8", errors="replace") if self.launcher_log.exists() else ""
        rank, how = root_cause(log)
        if failed and rank in (None, 0):
            event = failed[-1]  # rank 0 said what went wrong, with its advice; it is in the events file already
        else:
            event = self.crash_event(how or f"launcher exit code {code}", rank, log,
                                     failed[-1].advice if failed else "")
            self.append_event(event)
        emit(event)
        raise LaunchFailed(event.message, event.advice)

    def crash_event(self, how: str, rank: int | None, log: str, advice: str) -> ev.Failed:
        from lora_studio.core.training.checkpoint import latest_checkpoint

        who = f"process {rank} of {self.processes}" if rank is not None else f"one of {self.processes} processes"
        tail = rank_stderr(self.log_dir, rank) if rank is not None else ""
        if not tail:
            tail = "\n".join(log.splitlines()[-STDERR_LINES:])
        last = latest_checkpoint(self.output_dir)
        keep = (f"The last complete checkpoint is {last}; Resume (`--resume`) continues from it."
                if last else "No checkpoint was written before it.")
        return ev.Failed(f"{who} failed ({how}); the other processes were stopped.\n"
                         f"Its last output:\n{tail}",
                         " ".join(filter(None, [advice, keep, f"Logs of every process: {self.log_dir}."])))

    def append_event(self, event) -> None:
        # After rank 0 is gone: a line it left unfinished is closed first, so the file stays one event a line.
        with open(self.events_path, "a+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell():
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write((ev.to_json(event) + "\n").encode("utf-8"))


def train_processes(config, emit: ev.Emit, stop: Callable[[], bool] = lambda: False, *, processes: int,
                    resume: bool = False, events_path: str | os.PathLike | None = None,
                    config_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``train(config, emit, stop)`` over ``processes`` ranks; the config is saved for them unless given."""
    if config_path is None:
        from lora_studio.config import save

        config_path = launch_dir(config.output_dir) / "config.toml"
        save(config, config_path)  # written whole; the engine saves its own copy in output_dir
    run = MultiProcessRun(config_path, config.output_dir, processes, config.mixed_precision, resume, events_path)
    return run.run(emit, stop)
