"""Typed events every long job emits; plain dataclasses that round-trip through JSON lines.

A run in a child process (``accelerate launch``) writes these lines and the parent replays them,
so a multi-GPU run looks exactly like an in-process one to the GUI and the CLI.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Iterator, Union


@dataclass(frozen=True)
class Started:
    total_steps: int
    phase: str = "train"  # "train", "class_images", "generate", "cache", ...
    description: str = ""


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    loss: float | None = None
    lr: float | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    vram_used: int | None = None  # bytes; None on CPU
    vram_peak: int | None = None
    vram_total: int | None = None
    phase: str = "train"


@dataclass(frozen=True)
class Sample:
    path: str
    step: int
    prompt: str = ""


@dataclass(frozen=True)
class Checkpoint:
    path: str
    step: int


@dataclass(frozen=True)
class Warning:  # noqa: A001 - the protocol's name
    msg: str


@dataclass(frozen=True)
class Phase:
    """One part of a run has ended: its name ("load", "class_images", "cache", "setup", "train", "samples",
    "save"), how long it took and the most GPU memory it held (bytes; None on the CPU)."""
    name: str
    seconds: float
    peak_bytes: int | None = None
    note: str = ""  # what the memory plan chose for it, e.g. "VAE tiled; text encoders one at a time"

    def summary(self) -> str:
        peak = f", peak {self.peak_bytes / 2**30:.2f} GiB" if self.peak_bytes else ""
        return f"{self.name.replace('_', ' ')}: {self.seconds:.1f} s{peak}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Finished:
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    message: str
    advice: str = ""


Event = Union[Started, Progress, Sample, Checkpoint, Warning, Phase, Finished, Failed]
EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (Started, Progress, Sample, Checkpoint, Warning, Phase, Finished, Failed)
}
Emit = Callable[[Event], None]


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; a NaN loss is news, so keep it as a string the reader turns back.
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def to_dict(event: Event) -> dict[str, Any]:
    data = {k: _clean(v) for k, v in asdict(event).items()}
    return {"event": type(event).__name__, **data}


def to_json(event: Event) -> str:
    return json.dumps(to_dict(event), ensure_ascii=False)


def from_dict(data: dict[str, Any]) -> Event:
    data = dict(data)
    name = data.pop("event", None)
    cls = EVENT_TYPES.get(name)
    if cls is None:
        raise ValueError(f"unknown event type {name!r}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            continue  # newer writer, older reader: ignore extra fields
        if isinstance(value, str) and value in ("nan", "inf", "-inf") and "str" not in str(known[key].type):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


def from_json(line: str) -> Event:
    return from_dict(json.loads(line))


def read_jsonl(lines: Iterable[str]) -> Iterator[Event]:
    for line in lines:
        line = line.strip()
        if line:
            yield from_json(line)


class JsonlWriter:
    """An emit target that appends events to a file, flushed per line so a reader can tail it."""

    def __init__(self, path: str, forward: Emit | None = None):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # `--events runs/a.jsonl` on a new folder
        self._file = open(path, "a", encoding="utf-8")
        self._forward = forward

    def __call__(self, event: Event) -> None:
        self._file.write(to_json(event) + "\n")
        self._file.flush()
        if self._forward is not None:
            self._forward(event)

    def close(self) -> None:
        self._file.close()
