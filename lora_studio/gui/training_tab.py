"""Training tab: the form from the config's metadata, presets, Start/Stop/Resume and live feedback."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QGroupBox, QHBoxLayout, QMessageBox, QPlainTextEdit, QScrollArea, QSplitter,
                               QVBoxLayout, QWidget)

from lora_studio import config as cfgmod
from lora_studio.core import events as ev
from lora_studio.core.models.native import ModelFacts, model_facts
from lora_studio.errors import LoraStudioError
from lora_studio.gui import trigger_dialog, workers
from lora_studio.gui.launch_worker import ProcessesChoice, launch_job
from lora_studio.gui.widgets.base_model_panel import BaseModelPanel
from lora_studio.gui.widgets.class_images_panel import ClassImagesPanel
from lora_studio.gui.widgets.config_form import ConfigForm
from lora_studio.gui.widgets.loss_plot import LossPlot
from lora_studio.gui.widgets.memory_meter import GIB, MemoryMeter
from lora_studio.gui.widgets.run_panel import RunPanel, fmt_duration
from lora_studio.gui.widgets.samples_strip import SamplesStrip


class TrainingTab(QWidget):
    run_started = Signal()
    run_finished = Signal(dict)  # Finished.result
    run_failed = Signal(str, str)
    running_changed = Signal(bool)
    event_received = Signal(object)
    model_facts_changed = Signal()  # the base model's family or native size changed

    def __init__(self, parent=None):
        super().__init__(parent)
        self.job: workers.JobThread | None = None
        self.gpu: dict = {"name": "CPU", "total": 0, "cuda": False}
        self.facts: ModelFacts | None = None
        self.ready = True  # False until the app's heavy imports are done (MainWindow)
        self.last_result: dict | None = None
        self.last_dialog: QMessageBox | None = None
        self.events_seen = 0
        self._t0 = 0.0
        self._replaying = False
        self._loading_config = False
        self._kept_values = False  # True once a config was put in (remembered settings, a file, a run)
        self._build()
        self._model_changed(self.model_picker.model())

    # ------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        split = QSplitter(Qt.Horizontal)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.addWidget(split)
        split.addWidget(self._build_left())
        split.addWidget(self._build_right())
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([470, 900])
        self._set_running(False)

    def _build_left(self) -> QWidget:
        left = QWidget()
        lay = QVBoxLayout(left)
        lay.setContentsMargins(0, 0, 6, 0)
        lay.setSpacing(8)
        self.base_panel = BaseModelPanel()
        self.model_picker = self.base_panel.model_picker
        self.preset_combo = self.base_panel.preset_combo
        self.gpu_label = self.base_panel.gpu_label
        self.processes = ProcessesChoice()  # several GPUs: shown only where there is a choice
        self.base_panel.form.addRow(self.processes)
        self.model_picker.changed.connect(self._model_changed)
        self.preset_combo.currentIndexChanged.connect(self._apply_preset)
        lay.addWidget(self.base_panel)
        self.form = ConfigForm()
        # the DreamBooth settings' one home is this form; class images are made from its fields
        self.class_images = ClassImagesPanel(self.config)
        self.class_images.error.connect(self.show_failure)
        self.form.add_row("dreambooth", "", self.class_images)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.NoFrame)
        self.scroll.setWidget(self.form)
        self.scroll.setMinimumWidth(430)
        lay.addWidget(self.scroll, 1)
        return left

    def _build_right(self) -> QWidget:
        right = QWidget()
        lay = QVBoxLayout(right)
        lay.setContentsMargins(6, 0, 0, 0)
        lay.setSpacing(8)
        self.run_panel = RunPanel()
        rp = self.run_panel
        self.start_btn, self.stop_btn, self.resume_btn = rp.start_btn, rp.stop_btn, rp.resume_btn
        self.status_label, self.progress, self.speed_label = rp.status_label, rp.progress, rp.speed_label
        self.open_output = rp.open_output
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.resume_btn.clicked.connect(self.resume)
        self.form.changed.connect(self._form_changed)
        lay.addWidget(rp)
        self.plot = LossPlot()
        self.plot.setMinimumHeight(260)
        lay.addWidget(_boxed("Loss and learning rate", self.plot), 3)
        row = QHBoxLayout()
        self.memory = MemoryMeter()
        mem_box = _boxed("GPU memory", self.memory)
        mem_box.layout().addStretch(1)
        row.addWidget(mem_box, 1)
        self.samples = SamplesStrip()
        row.addWidget(_boxed("Validation samples", self.samples), 2)
        lay.addLayout(row)
        self.log = QPlainTextEdit()
        self.log.setObjectName("log")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        lay.addWidget(_boxed("Log", self.log), 1)
        return right

    # ----------------------------------------------------------------------------------------- config
    def set_gpu(self, info: dict) -> None:
        self.gpu = info
        self.processes.set_gpu(info)
        total = info.get("total") or 0
        if info.get("cuda") and total:
            gib = total / GIB
            size = cfgmod.preset_for_memory(gib)
            self.gpu_label.setText(f"Detected {info['name']} with {gib:.0f} GiB: the {size} GB preset fits.")
            if self._kept_values:  # remembered or loaded settings win; the preset is one click away
                self.gpu_label.setText(self.gpu_label.text() + " Your settings are kept: pick it to apply it.")
            else:
                self.preset_combo.setCurrentIndex(self.preset_combo.findData(size))
            self.memory.update_memory(0, 0, total)
        elif info.get("backend") == "mps":
            self.gpu_label.setText("Apple GPU (MPS): training runs on it, without the CUDA-only speed-ups "
                                   "(CUDA graphs, 8-bit base model).")
            self.memory.update_memory(0, 0, total)  # Progress events carry MPS's readings
        else:
            self.gpu_label.setText("No CUDA GPU found: training runs on the CPU.")
            self.memory.set_cpu(info.get("name") or "CPU")

    def _model_changed(self, name: str) -> None:
        """Resolution and presets follow the model's detected family and native size."""
        try:
            self.facts = model_facts(name) if name else None
        except LoraStudioError as exc:
            self.facts = None
            self.base_panel.model_label.setText(str(exc))
            return
        if self.facts is None:
            self.base_panel.model_label.setText("Family and size are detected when training starts.")
            return
        from lora_studio.core.models.loader import family_name

        self.base_panel.model_label.setText(f"{family_name(self.facts.family)} · native size "
                                            f"{self.facts.resolution} px")
        if not self._loading_config:
            self.follow_model()
        self.model_facts_changed.emit()

    def follow_model(self) -> None:
        """Resolution to the model's native size, then the chosen preset for its family (capped at that size)."""
        if self.facts is not None:
            self.form.set_values({"resolution": self.facts.resolution})
        self._apply_preset()

    def model_family(self) -> str:
        """The form's explicit choice, else the family detected from the model's files."""
        fam = self.form.value("model_family")
        if fam != "auto":
            return fam
        return self.facts.family if self.facts is not None else "sd1"

    def _apply_preset(self) -> None:
        size = self.preset_combo.currentData()
        if size is None:
            return
        values = dict(cfgmod.PRESETS["sdxl" if self.model_family() == "sdxl" else "sd1"][size])
        if self.facts is not None and "resolution" in values:  # never above what the model was made for
            values["resolution"] = min(values["resolution"], self.facts.resolution)
        self.form.set_values(values)
        self.append_log(f"Preset for {size} GB cards applied ({', '.join(f'{k}={v}' for k, v in values.items())}).")

    def _form_changed(self, name: str) -> None:
        if name == "output_dir":
            self.open_output.set_folder(self.form.value("output_dir"))
        elif name == "model_family":
            self.model_facts_changed.emit()

    def config(self) -> cfgmod.TrainingConfig:
        data = cfgmod.TrainingConfig().to_dict()
        data.update(self.form.values())
        data["pretrained_model_name_or_path"] = self.model_picker.model() or "demo"
        return cfgmod.from_dict(data, source="Training tab")

    def set_config(self, cfg: cfgmod.TrainingConfig) -> None:
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(0)
        self.preset_combo.blockSignals(False)
        self._kept_values = True
        self._loading_config = True  # a loaded config keeps its own resolution
        try:
            self.model_picker.set_model(cfg.pretrained_model_name_or_path)
            self.form.set_config(cfg)
        finally:
            self._loading_config = False
        self.open_output.set_folder(cfg.output_dir)

    # ------------------------------------------------------------------------------------------- runs
    def is_running(self) -> bool:
        return self.job is not None and self.job.isRunning()

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self._set_running(self.is_running(), emit=False)

    def _set_running(self, running: bool, emit: bool = True) -> None:
        self.run_panel.set_running(running, self.ready)
        self.class_images.set_ready(self.ready and not running)
        self.form.setEnabled(not running)
        if emit:
            self.running_changed.emit(running)

    def start(self) -> bool:
        return self._launch(resume=False)

    def resume(self) -> bool:
        return self._launch(resume=True)

    def _launch(self, resume: bool) -> bool:
        if self.is_running():
            return False
        try:
            cfg = self.config()
        except cfgmod.ConfigError as exc:
            self.form.highlight(exc.key)
            self.show_failure(str(exc), "Fix the highlighted setting and press Start again.")
            return False
        self.form.highlight(None)
        if not resume and not trigger_dialog.confirm_start(self, cfg):  # captions lacking the trigger word
            return False
        if not resume:
            self.plot.clear()
            self.samples.clear()
            self.memory.peak = 0
        self.last_result = None
        self.events_seen = 0
        self._t0 = time.monotonic()
        out = os.path.abspath(cfg.output_dir)
        self.open_output.set_folder(out)
        self.append_log(("Resuming" if resume else "Starting") + f" training: {cfg.pretrained_model_name_or_path} "
                        f"-> {out}, {cfg.max_train_steps} steps.")
        self.status_label.setText("Resuming…" if resume else "Starting…")
        n = self.processes.value()
        self.job = launch_job(cfg, n, resume) if n > 1 else workers.training_job(cfg, resume=resume)
        self.job.event.connect(self.on_event)
        self.job.error.connect(self._on_error)
        self.job.finished.connect(self._on_thread_done)
        self._set_running(True)
        self.job.start()
        self.run_started.emit()
        return True

    def stop(self) -> None:
        if self.is_running():
            self.job.request_stop()
            self.status_label.setText("Stopping after this step…")
            self.append_log("Stop requested: finishing the current step and saving a checkpoint.")

    def _on_thread_done(self) -> None:
        self._set_running(False)

    def _on_error(self, message: str, advice: str) -> None:
        self.on_event(ev.Failed(message, advice))

    # ----------------------------------------------------------------------------------------- events
    def on_event(self, e) -> None:
        self.events_seen += 1
        self.event_received.emit(e)
        if isinstance(e, ev.Started):
            self._on_started(e)
        elif isinstance(e, ev.Progress):
            self._on_progress(e)
        elif isinstance(e, ev.Sample):
            self.samples.add_sample(e.path, e.step, e.prompt)
        elif isinstance(e, ev.Checkpoint):
            self.append_log(f"Checkpoint at step {e.step}: {os.path.abspath(e.path)}")
        elif isinstance(e, ev.Warning):
            self.append_log(f"warning: {e.msg}")
        elif isinstance(e, ev.Phase):  # each part of the run: its time and the most GPU memory it held
            self.append_log(e.summary())
        elif isinstance(e, ev.Finished):
            self._on_finished(e)
        elif isinstance(e, ev.Failed):
            self.status_label.setText("Failed.")
            self.append_log(f"error: {e.message}" + (f"\nwhat to do: {e.advice}" if e.advice else ""))
            self.show_failure(e.message, e.advice)
            self.run_failed.emit(e.message, e.advice)

    def _on_started(self, e) -> None:
        phase = e.phase.replace("_", " ")
        self.progress.setRange(0, max(1, e.total_steps))
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m steps" if e.phase == "train" else f"{phase}: %v / %m")
        self.append_log(f"Started {e.phase}" + (f": {e.description}" if e.description else "") +
                        f" ({e.total_steps} steps).")
        self.status_label.setText("Training…" if e.phase == "train" else f"{phase.capitalize()}…")

    def _on_progress(self, e) -> None:
        self.progress.setRange(0, max(1, e.total))
        self.progress.setValue(e.step)
        if e.phase == "train":
            if self.plot.points and e.step <= self.plot.steps.view()[-1]:
                self.samples.drop_from(e.step)  # resumed from an earlier checkpoint
            self.plot.add(e.step, e.loss, e.lr)
        speed = f"{e.it_per_s:.2f} it/s" if e.it_per_s else "– it/s"
        loss = "" if e.loss is None else f" · loss {e.loss:.4f}"
        if not self._replaying:
            self.speed_label.setText(f"{speed} · elapsed {fmt_duration(time.monotonic() - self._t0)} · "
                                     f"ETA {fmt_duration(e.eta_s)}{loss}")
        self.memory.update_memory(e.vram_used, e.vram_peak, e.vram_total)
        if e.loss is not None and not math.isfinite(e.loss):
            self.append_log(f"step {e.step}: loss is {e.loss} — the run is diverging.")

    def _on_finished(self, e) -> None:
        r = self.last_result = dict(e.result)
        stopped = bool(r.get("stopped"))
        self.status_label.setText("Stopped (resumable)." if stopped else "Finished.")
        final = r.get("final_loss")
        has_loss = isinstance(final, (int, float))
        self.speed_label.setText(f"{r.get('steps', '–')} steps in {fmt_duration(r.get('elapsed_s'))}" +
                                 (f" · final loss {final:.4f}" if has_loss else ""))
        words = [f"{r.get('steps', '?')} of {r.get('total_steps', '?')} steps"]
        if has_loss:
            words.append(f"final loss {final:.4f}")
        for key, label in (("lora_path", "LoRA"), ("adapter_path", "diffusers adapter"), ("checkpoint", "checkpoint")):
            if r.get(key):
                words.append(f"{label}: {os.path.abspath(r[key])}")
        self.append_log(("Stopped (resume continues from the checkpoint): " if stopped else "Finished: ") +
                        "; ".join(words))
        if r.get("output_dir"):
            self.open_output.set_folder(r["output_dir"])
        self.plot.redraw()
        self.run_finished.emit(dict(r))

    def add_sample(self, path: str, step: int, prompt: str = "") -> None:
        self.samples.add_sample(path, step, prompt)

    def append_log(self, text: str) -> None:
        self.log.appendPlainText(f"[{time.strftime('%H:%M:%S')}] {text}")

    def show_failure(self, message: str, advice: str) -> None:
        box = QMessageBox(QMessageBox.Critical, "Training stopped", message, QMessageBox.Ok, self)
        if advice:
            box.setInformativeText(f"What to do: {advice}")
        box.setWindowModality(Qt.WindowModal)
        self.last_dialog = box
        box.open()  # non-blocking: the event loop keeps running

    # ------------------------------------------------------------------------------------ finished runs
    def load_run(self, folder: str | os.PathLike) -> int:
        """Show a finished run's curves, samples and result from its events.jsonl (and config.toml)."""
        folder = Path(folder)
        events_path = folder / "events.jsonl" if folder.is_dir() else folder
        if folder.is_dir() and (folder / "config.toml").exists():
            try:
                self.set_config(cfgmod.load(folder / "config.toml"))
            except cfgmod.ConfigError as exc:
                self.append_log(f"warning: {exc}")
        events = workers.events_from_file(str(events_path))
        self.plot.clear()
        self.samples.clear()
        self._t0 = time.monotonic()
        base = events_path.parent
        self.open_output.set_folder(str(base))
        self._replaying = True
        for e in events:
            if isinstance(e, ev.Sample) and not Path(e.path).is_absolute():
                e = ev.Sample(str(base / e.path), e.step, e.prompt)
            if isinstance(e, ev.Failed):
                self.append_log(f"error: {e.message}")
                continue
            self.on_event(e)
        self._replaying = False
        if not any(isinstance(e, ev.Finished) for e in events):
            self.status_label.setText("Loaded (unfinished run).")
        self.plot.redraw()
        self.append_log(f"Loaded run {events_path.resolve()} ({len(events)} events).")
        return len(events)

    def shutdown(self) -> None:
        self.class_images.shutdown()


def _boxed(title: str, widget: QWidget) -> QGroupBox:
    box = QGroupBox(title)
    lay = QVBoxLayout(box)
    lay.addWidget(widget)
    return box
