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

from PySide6.QtCore import QObject, QRunnable, QThread, Signal
from PySide6.QtGui import QImage

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
    from lora_studio.core import system

    info = system.gpu_info()
    if info is None:
        return {"name": "CPU", "total": 0, "cuda": False}
    return {"name": info.name, "total": int(info.total_memory), "cuda": True, "backend": info.backend}


def leave_a_core_for_the_gui() -> None:
    """On a CPU run torch would take every core; keep one free so the window stays responsive."""
    import os

    import torch

    cores = os.cpu_count() or 1
    if not torch.cuda.is_available() and cores > 1 and torch.get_num_threads() >= cores:
        torch.set_num_threads(cores - 1)


def settle_heap() -> None:
    """Move every object alive now (torch, diffusers, a loaded pipeline) out of the cyclic collector's reach.

    A full collection walks every tracked object while holding the GIL; with torch and diffusers imported
    that took 0.3-0.7 s on the test machine and froze the GUI thread, whichever thread triggered it.
    Frozen objects are never scanned again, so later collections only walk what jobs create.
    """
    import gc

    gc.freeze()


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
        # Does torch see the device the installer chose? (A driver update or a new card can break it.)
        try:
            from lora_studio.core.system import torch_check

            check = torch_check()
            info["check_ok"], info["check_message"], info["check_advice"] = check.ok, check.message, check.advice
        except Exception as exc:  # noqa: BLE001 - a failed check must not keep the app from starting
            info["check_ok"], info["check_message"], info["check_advice"] = False, str(exc), ""
        settle_heap()
        self.found.emit(info)


# -------------------------------------------------------------------------------------------- jobs
EVENTS_FILE = "events.jsonl"


def training_job(config, resume: bool = False) -> JobThread:
    """The one training engine, with the run's events also kept in ``<output_dir>/events.jsonl``
    so a finished run can be reopened (File > Open finished run)."""

    def fn(emit, stop):
        import os

        from lora_studio.core.training import train

        leave_a_core_for_the_gui()
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


def open_dataset_job(path: str, resolution: int = 512, sdxl: bool = False) -> JobThread:
    """Scan the folder and validate every image (fills sizes and problems) off the GUI thread."""

    def fn(emit, stop):
        from lora_studio.core.dataset import Dataset, make_buckets, validate_dataset

        ds = Dataset.open(path)
        validate_dataset(ds, buckets=make_buckets(resolution, sdxl=sdxl), stop=stop)
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


# ------------------------------------------------------------------------------------- preview engine
class PreviewWorker(QThread):
    """Keeps one preview engine (and its loaded base model) alive on a thread and serves requests in order.

    Requests are plain tuples put on a queue; a newer generate request replaces any waiting one, so dragging
    a slider never builds a backlog.
    """

    event = Signal(object)  # core events of the running request
    image = Signal(object, dict)  # (PIL image, request info)
    grid = Signal(object, dict)
    model_loaded = Signal(str, int, bool, bool)  # model, number of loads so far, low-memory mode, 8-bit UNet
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
        from lora_studio.core.inference.engine import PreviewEngine

        if self.engine is None or self.model != model:
            self.engine = None  # let the old pipeline go before the new one loads
            leave_a_core_for_the_gui()
            self.engine = PreviewEngine(model)
            settle_heap()
            self.model = model
            self.loads += 1
            self.model_loaded.emit(model, self.loads, self.engine.low_memory, self.engine.int8_unet)
        return self.engine

    def _do_load(self, model: str) -> None:
        self._ensure_engine(model)

    @staticmethod
    def _request(params: dict):
        from lora_studio.core.inference.engine import PreviewRequest

        p = dict(params)
        p["width"] = p.get("width") or None
        p["height"] = p.get("height") or None
        return PreviewRequest(**p)

    def _apply_loras(self, engine, loras: list[tuple[str, str, float]]) -> None:
        """``loras``: (path, adapter name, weight); a disabled LoRA stays loaded at weight 0."""
        engine.set_loras([(path, name) for path, name, _ in loras])
        engine.set_weights({name: w for _, name, w in loras})

    def _do_generate(self, model: str, loras: list, params: dict) -> None:
        engine = self._ensure_engine(model)
        self._apply_loras(engine, loras)
        t0 = time.perf_counter()
        img = engine.generate(self._request(params), emit=self.event.emit, stop=self._stop.is_set)
        if img is None:
            return
        info = dict(params, loras=[(p, w) for p, _, w in loras], model=model, seconds=time.perf_counter() - t0,
                    loads=self.loads, base_loads=engine.base_loads)
        self.image.emit(img, info)

    def _do_grid(self, model: str, loras: list, params: dict, adapter: str, weights: list, seeds: list,
                 checkpoints: list | None = None) -> None:
        engine = self._ensure_engine(model)
        self._apply_loras(engine, loras)
        request = self._request(params)
        if checkpoints:
            img = engine.checkpoint_grid(request, checkpoints, seeds, emit=self.event.emit, stop=self._stop.is_set)
        else:
            img = engine.weight_grid(request, adapter, weights, seeds, emit=self.event.emit, stop=self._stop.is_set)
        if img is not None:
            self.grid.emit(img, dict(weights=weights, seeds=seeds, adapter=adapter, checkpoints=checkpoints))

    def _do_merge(self, loras: list, out: str, model: str | None = None, fuse_out: str | None = None,
                  rank: int = 0) -> None:
        """``loras``: [(path, weight)] -> one LoRA file (exact, or SVD to ``rank``), or a fused full model."""
        from lora_studio.core.inference import merge as merging

        if fuse_out:
            path = merging.fuse_and_save(model, loras, fuse_out)
        else:
            path = merging.save_merged(merging.merge(loras, rank=rank), out)
        self.merged.emit(str(path))


# ------------------------------------------------------------------------------------------ thumbnails
class _ThumbSignals(QObject):
    done = Signal(str, QImage)


class ThumbnailTask(QRunnable):
    """Decodes one image at thumbnail size with the dataset layer's safe reader; QImage is fine off-thread."""

    def __init__(self, path: str, size: int, signals: _ThumbSignals):
        super().__init__()
        self.path, self.size, self.signals = path, size, signals
        self.setAutoDelete(True)

    def run(self) -> None:
        from lora_studio.core.dataset import thumbnail

        small = thumbnail(self.path, self.size)
        if small is None:
            img = QImage()
        else:
            data = small.convert("RGB").tobytes("raw", "RGB")
            img = QImage(data, small.width, small.height, 3 * small.width, QImage.Format_RGB888).copy()
        self.signals.done.emit(self.path, img)


def events_from_file(path: str) -> list:
    with open(path, encoding="utf-8") as fh:
        return list(ev.read_jsonl(fh))
