"""QThread hosts for core jobs. The only GUI module that may reach torch, and only inside ``run``.

Core jobs report through typed events (lora_studio.core.events); a worker turns each into one Qt signal
carrying the event object. Only signals cross threads; stop requests are a threading.Event the job polls
between steps.
"""

from __future__ import annotations

import importlib
import queue
import threading
import time
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QSize, QThread, Signal
from PySide6.QtGui import QImage, QImageReader

from lora_studio.core import events as ev


def _describe(exc: BaseException) -> tuple[str, str]:
    from lora_studio.errors import describe

    return describe(exc)


class JobThread(QThread):
    """Runs ``fn(emit, stop) -> result`` once on its own thread."""

    event = Signal(object)
    result = Signal(object)
    error = Signal(str, str)

    def __init__(self, fn: Callable[[Callable, Callable[[], bool]], Any], parent: QObject | None = None):
        super().__init__(parent)
        self._fn = fn
        self._stop = threading.Event()

    def request_stop(self) -> None:
        self._stop.set()

    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _emit(self, event) -> None:
        if isinstance(event, ev.Failed):
            self._failed_sent = True
        self.event.emit(event)

    def run(self) -> None:
        self._failed_sent = False
        try:
            out = self._fn(self._emit, self._stop.is_set)
        except BaseException as exc:  # noqa: BLE001 - reported to the user, never swallowed
            if not self._failed_sent:  # the engine already sent Failed with its advice otherwise
                traceback.print_exc()
                message, advice = _describe(exc)
                self.error.emit(message, advice)
        else:
            self.result.emit(out)


# ------------------------------------------------------------------------------------------ system info
def gpu_info() -> dict[str, Any]:
    """{'name', 'total' (bytes), 'cuda'}; the CPU when torch sees no GPU. Imports torch: call off-thread."""
    try:
        from lora_studio.core import system

        info = system.gpu_info()
    except ImportError:
        info = None
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return {"name": props.name, "total": int(props.total_memory), "cuda": True}
    if info is None:
        return {"name": "CPU", "total": 0, "cuda": False}
    return {"name": info.name, "total": int(info.total_memory), "cuda": True, "backend": info.backend}


class SystemProbe(QThread):
    """Finds the GPU at startup; this also imports torch once, off the GUI thread."""

    found = Signal(dict)

    def run(self) -> None:
        try:
            info = gpu_info()
        except Exception:  # noqa: BLE001
            info = {"name": "CPU", "total": 0, "cuda": False}
        # Warm the heavy imports here, once, so no job stalls on them later.
        for name in ("lora_studio.core.training.engine", "lora_studio.core.inference", "diffusers", "peft"):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the job that needs it reports the real error
                pass
        self.found.emit(info)


# -------------------------------------------------------------------------------------------- jobs
EVENTS_FILE = "events.jsonl"


def training_job(config, resume: bool = False) -> JobThread:
    """The one training engine, with the run's events also kept in ``<output_dir>/events.jsonl``
    so a finished run can be reopened (File > Open finished run)."""

    def fn(emit, stop):
        import os

        from lora_studio.core.training import train

        os.makedirs(config.output_dir, exist_ok=True)
        path = os.path.join(config.output_dir, EVENTS_FILE)
        if not resume and os.path.exists(path):
            os.remove(path)
        writer = ev.JsonlWriter(path, forward=emit)
        try:
            return train(config, writer, stop, resume=resume)
        finally:
            writer.close()

    return JobThread(fn)


def open_dataset_job(path: str) -> JobThread:
    def fn(emit, stop):
        from lora_studio.core.dataset import Dataset

        ds = Dataset.open(path)
        validate = getattr(ds, "validate", None)
        if callable(validate):
            validate()
        for item in ds.items:  # read image headers here, not in the table's paint
            if stop():
                break
            item.size  # noqa: B018 - a lazy property; reading it caches the size
        return ds

    return JobThread(fn)


def class_images_job(config) -> JobThread:
    """Generate the missing DreamBooth class images with the base model (what training would do first)."""

    def fn(emit, stop):
        import torch

        from lora_studio.core.training.class_images import ensure_class_images
        from lora_studio.core.training.models import load_models

        models = load_models(config.pretrained_model_name_or_path)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        with torch.inference_mode():
            return ensure_class_images(models, config, device, emit, stop, config.resolution,
                                       getattr(config, "sample_steps", 20))

    return JobThread(fn)


def call_job(fn: Callable[[], Any]) -> JobThread:
    return JobThread(lambda emit, stop: fn())


# ------------------------------------------------------------------------------------- preview engine
class PreviewWorker(QThread):
    """Keeps one preview engine (and its loaded base model) alive on a thread and serves requests in order.

    Requests are plain tuples put on a queue; a newer generate request replaces any waiting one, so dragging
    a slider never builds a backlog.
    """

    event = Signal(object)  # core events of the running request
    image = Signal(object, dict)  # (PIL image, request info)
    grid = Signal(object, dict)
    model_loaded = Signal(str, int)  # model, number of loads so far
    merged = Signal(str)
    error = Signal(str, str)
    busy = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.engine = None
        self.model = None
        self.loads = 0

    # ---- GUI side
    def submit(self, kind: str, **kw) -> None:
        if kind == "generate":
            # drop stale generate requests: only the newest slider position matters
            kept = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item[0] != "generate":
                    kept.append(item)
            for item in kept:
                self._queue.put(item)
        self._stop.clear()
        self._queue.put((kind, kw))
        if not self.isRunning():
            self.start()

    def cancel(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._queue.put(("quit", {}))
        self.wait(10000)

    # ---- worker side
    def run(self) -> None:
        while True:
            kind, kw = self._queue.get()
            if kind == "quit":
                return
            self.busy.emit(True)
            try:
                getattr(self, f"_do_{kind}")(**kw)
            except BaseException as exc:  # noqa: BLE001 - shown to the user
                traceback.print_exc()
                message, advice = _describe(exc)
                self.error.emit(message, advice)
            finally:
                if self._queue.empty():
                    self.busy.emit(False)

    def _ensure_engine(self, model: str):
        from lora_studio.core.inference import PreviewEngine

        if self.engine is None or self.model != model:
            self.engine = PreviewEngine(model)
            self.model = model
            self.loads += 1
            self.model_loaded.emit(model, self.loads)
        return self.engine

    def _do_load(self, model: str) -> None:
        self._ensure_engine(model)

    def _apply_loras(self, engine, loras: list[tuple[str, float]]) -> None:
        paths = [p for p, _ in loras]
        engine.set_loras(paths)
        engine.set_weights([w for _, w in loras])

    def _do_generate(self, model: str, loras: list, params: dict) -> None:
        engine = self._ensure_engine(model)
        self._apply_loras(engine, loras)
        t0 = time.perf_counter()
        img = engine.generate(emit=self.event.emit, stop=self._stop.is_set, **params)
        if img is None or self._stop.is_set():
            return
        info = dict(params, loras=loras, model=model, seconds=time.perf_counter() - t0, loads=self.loads)
        self.image.emit(img, info)

    def _do_grid(self, model: str, loras: list, params: dict, weights: list, seeds: list) -> None:
        from lora_studio.core.inference import comparison_grid

        engine = self._ensure_engine(model)
        self._apply_loras(engine, loras)
        img = comparison_grid(engine, weights=weights, seeds=seeds, emit=self.event.emit, stop=self._stop.is_set,
                              **params)
        if img is not None:
            self.grid.emit(img, dict(weights=weights, seeds=seeds))

    def _do_merge(self, loras: list, out: str, model: str | None = None, fuse_out: str | None = None) -> None:
        from lora_studio.core import inference

        if fuse_out:
            inference.fuse(model, loras, fuse_out, emit=self.event.emit)
            self.merged.emit(fuse_out)
        else:
            inference.merge(loras, out, emit=self.event.emit)
            self.merged.emit(out)


# ------------------------------------------------------------------------------------------ thumbnails
class _ThumbSignals(QObject):
    done = Signal(str, QImage)


class ThumbnailTask(QRunnable):
    """Decodes one image at thumbnail size; QImage is safe off the GUI thread (QPixmap is not)."""

    def __init__(self, path: str, size: int, signals: _ThumbSignals):
        super().__init__()
        self.path, self.size, self.signals = path, size, signals
        self.setAutoDelete(True)

    def run(self) -> None:
        reader = QImageReader(self.path)
        reader.setAutoTransform(True)
        full = reader.size()
        if full.isValid() and (full.width() > self.size or full.height() > self.size):
            reader.setScaledSize(full.scaled(QSize(self.size, self.size), _keep_aspect()))
        img = reader.read()
        self.signals.done.emit(self.path, img)


def _keep_aspect():
    from PySide6.QtCore import Qt

    return Qt.KeepAspectRatio


def events_from_file(path: str) -> list:
    with open(path, encoding="utf-8") as fh:
        return list(ev.read_jsonl(fh))
