"""Training tab: the form from the config's metadata, presets, Start/Stop/Resume and live feedback."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QMessageBox, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea,
                               QSplitter, QVBoxLayout, QWidget)

from lora_studio import config as cfgmod
from lora_studio.core import events as ev
from lora_studio.gui import workers
from lora_studio.gui.widgets.config_form import ConfigForm
from lora_studio.gui.widgets.loss_plot import LossPlot
from lora_studio.gui.widgets.model_picker import ModelPicker

GIB = 1024**3


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_gib(n: int | None) -> str:
    return "–" if n is None else f"{n / GIB:.1f} GiB"


class MemoryMeter(QWidget):
    """GPU memory: a bar for memory in use, a tick of text for peak and total."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.label = QLabel()
        self.label.setObjectName("hint")
        lay.addWidget(self.bar)
        lay.addWidget(self.label)
        self.peak = 0
        self.set_cpu()

    def set_cpu(self, name: str = "CPU") -> None:
        self.bar.setValue(0)
        self.bar.setFormat(f"{name}: no GPU memory to track")
        self.label.setText("In use – · peak – · total –")

    def update_memory(self, used: int | None, peak: int | None, total: int | None) -> None:
        if used is None or not total:
            return
        self.peak = max(self.peak, peak or used)
        self.bar.setValue(int(1000 * used / total))
        self.bar.setFormat(f"{fmt_gib(used)} of {fmt_gib(total)} ({100 * used / total:.0f}%)")
        self.label.setText(f"In use {fmt_gib(used)} · peak {fmt_gib(self.peak)} · total {fmt_gib(total)}")


class TrainingTab(QWidget):
    run_started = Signal()
    run_finished = Signal(dict)  # Finished.result
    run_failed = Signal(str, str)
    running_changed = Signal(bool)
    event_received = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.job: workers.JobThread | None = None
        self.gpu: dict = {"name": "CPU", "total": 0, "cuda": False}
        self.last_result: dict | None = None
        self.last_dialog: QMessageBox | None = None
        self.events_seen = 0
        self._t0 = 0.0
        self._replaying = False
        self._build()

    # ------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        split = QSplitter(Qt.Horizontal)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.addWidget(split)

        # left: what to train
        left = QWidget()
        llay = QVBoxLayout(left)
        llay.setContentsMargins(0, 0, 6, 0)
        llay.setSpacing(8)
        model_box = QGroupBox("Base model and preset")
        mform = QFormLayout(model_box)
        mform.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.model_picker = ModelPicker()
        mform.addRow("Base model:", self.model_picker)
        self.preset_combo = QComboBox()
        self.preset_combo.addItem("Custom (keep settings)", None)
        for size in cfgmod.PRESET_SIZES:
            self.preset_combo.addItem(f"{size} GB card", size)
        self.preset_combo.setToolTip("Settings that fit a GPU with this much memory; "
                                     "the detected GPU's preset is selected at start.")
        self.preset_combo.currentIndexChanged.connect(self._apply_preset)
        mform.addRow("Preset:", self.preset_combo)
        self.gpu_label = QLabel("Detecting GPU…")
        self.gpu_label.setObjectName("hint")
        mform.addRow("", self.gpu_label)
        llay.addWidget(model_box)

        self.form = ConfigForm()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(self.form)
        scroll.setMinimumWidth(430)
        llay.addWidget(scroll, 1)
        split.addWidget(left)

        # right: how it goes
        right = QWidget()
        rlay = QVBoxLayout(right)
        rlay.setContentsMargins(6, 0, 0, 0)
        rlay.setSpacing(8)
        run_box = QGroupBox("Run")
        run_lay = QVBoxLayout(run_box)
        buttons = QHBoxLayout()
        self.start_btn = QPushButton("Start training")
        self.start_btn.setObjectName("primary")
        self.start_btn.clicked.connect(self.start)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stop after the current step and save a checkpoint you can resume.")
        self.stop_btn.clicked.connect(self.stop)
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip("Continue the run in the output folder from its last checkpoint.")
        self.resume_btn.clicked.connect(self.resume)
        for b in (self.start_btn, self.stop_btn, self.resume_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.status_label = QLabel("Ready.")
        self.status_label.setObjectName("big")
        buttons.addWidget(self.status_label)
        run_lay.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setFormat("not started")
        self.progress.setValue(0)
        run_lay.addWidget(self.progress)
        self.speed_label = QLabel("– it/s · elapsed – · ETA –")
        self.speed_label.setObjectName("hint")
        run_lay.addWidget(self.speed_label)
        rlay.addWidget(run_box)

        plot_box = QGroupBox("Loss and learning rate")
        play = QVBoxLayout(plot_box)
        self.plot = LossPlot()
        self.plot.setMinimumHeight(260)
        play.addWidget(self.plot)
        rlay.addWidget(plot_box, 3)

        row = QHBoxLayout()
        mem_box = QGroupBox("GPU memory")
        mlay = QVBoxLayout(mem_box)
        self.memory = MemoryMeter()
        mlay.addWidget(self.memory)
        mlay.addStretch(1)
        row.addWidget(mem_box, 1)
        samples_box = QGroupBox("Validation samples")
        slay = QVBoxLayout(samples_box)
        self.samples = QListWidget()
        self.samples.setViewMode(QListWidget.IconMode)
        self.samples.setFlow(QListWidget.LeftToRight)
        self.samples.setWrapping(False)
        self.samples.setIconSize(QSize(96, 96))
        self.samples.setFixedHeight(132)
        self.samples.setMovement(QListWidget.Static)
        slay.addWidget(self.samples)
        row.addWidget(samples_box, 2)
        rlay.addLayout(row)

        log_box = QGroupBox("Log")
        log_lay = QVBoxLayout(log_box)
        self.log = QPlainTextEdit()
        self.log.setObjectName("log")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        log_lay.addWidget(self.log)
        rlay.addWidget(log_box, 1)
        split.addWidget(right)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([470, 900])
        self._set_running(False)

    # ----------------------------------------------------------------------------------------- config
    def set_gpu(self, info: dict) -> None:
        self.gpu = info
        total = info.get("total") or 0
        if info.get("cuda") and total:
            gib = total / GIB
            size = cfgmod.preset_for_memory(gib)
            self.gpu_label.setText(f"Detected {info['name']} with {gib:.0f} GiB: the {size} GB preset fits.")
            self.preset_combo.setCurrentIndex(self.preset_combo.findData(size))
            self.memory.update_memory(0, 0, total)
        else:
            self.gpu_label.setText("No CUDA GPU found: training runs on the CPU (fine for the demo model).")
            self.memory.set_cpu(info.get("name") or "CPU")

    def model_family(self) -> str:
        fam = self.form.value("model_family")
        if fam != "auto":
            return fam
        model = self.model_picker.model().lower()
        return "sdxl" if "xl" in model else "sd1"

    def _apply_preset(self) -> None:
        size = self.preset_combo.currentData()
        if size is None:
            return
        values = cfgmod.PRESETS[self.model_family()][size]
        self.form.set_values(values)
        self.append_log(f"Preset for {size} GB cards applied ({', '.join(f'{k}={v}' for k, v in values.items())}).")

    def config(self) -> cfgmod.TrainingConfig:
        data = cfgmod.TrainingConfig().to_dict()
        data.update(self.form.values())
        data["pretrained_model_name_or_path"] = self.model_picker.model() or "demo"
        return cfgmod.from_dict(data, source="Training tab")

    def set_config(self, cfg: cfgmod.TrainingConfig) -> None:
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(0)
        self.preset_combo.blockSignals(False)
        self.form.set_config(cfg)
        self.model_picker.set_model(cfg.pretrained_model_name_or_path)

    # ------------------------------------------------------------------------------------------- runs
    def is_running(self) -> bool:
        return self.job is not None and self.job.isRunning()

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.resume_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.form.setEnabled(not running)
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
        if not resume:
            self.plot.clear()
            self.samples.clear()
            self.memory.peak = 0
        self.last_result = None
        self.events_seen = 0
        self._t0 = time.monotonic()
        self.append_log(("Resuming" if resume else "Starting") + f" training: {cfg.pretrained_model_name_or_path} "
                        f"-> {cfg.output_dir}, {cfg.max_train_steps} steps.")
        self.status_label.setText("Resuming…" if resume else "Starting…")
        self.job = workers.training_job(cfg, resume=resume)
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
            self.progress.setRange(0, max(1, e.total_steps))
            self.progress.setValue(0)
            self.progress.setFormat("%v / %m steps" if e.phase == "train" else f"{e.phase.replace('_', ' ')}: %v / %m")
            self.append_log(f"Started {e.phase}" + (f": {e.description}" if e.description else "") +
                            f" ({e.total_steps} steps).")
            self.status_label.setText("Training…" if e.phase == "train" else f"{e.phase.replace('_', ' ').capitalize()}…")
        elif isinstance(e, ev.Progress):
            self.progress.setRange(0, max(1, e.total))
            self.progress.setValue(e.step)
            if e.phase == "train":
                if self.plot.points and e.step <= self.plot.steps.view()[-1]:
                    self._drop_samples_from(e.step)  # resumed from an earlier checkpoint
                self.plot.add(e.step, e.loss, e.lr)
            speed = f"{e.it_per_s:.2f} it/s" if e.it_per_s else "– it/s"
            loss = "" if e.loss is None else f" · loss {e.loss:.4f}"
            if not self._replaying:
                self.speed_label.setText(f"{speed} · elapsed {fmt_duration(time.monotonic() - self._t0)} · "
                                         f"ETA {fmt_duration(e.eta_s)}{loss}")
            self.memory.update_memory(e.vram_used, e.vram_peak, e.vram_total)
            if e.loss is not None and not math.isfinite(e.loss):
                self.append_log(f"step {e.step}: loss is {e.loss} — the run is diverging.")
        elif isinstance(e, ev.Sample):
            self.add_sample(e.path, e.step, e.prompt)
        elif isinstance(e, ev.Checkpoint):
            self.append_log(f"Checkpoint at step {e.step}: {e.path}")
        elif isinstance(e, ev.Warning):
            self.append_log(f"warning: {e.msg}")
        elif isinstance(e, ev.Finished):
            self.last_result = dict(e.result)
            stopped = bool(e.result.get("stopped"))
            self.status_label.setText("Stopped (resumable)." if stopped else "Finished.")
            final = e.result.get("final_loss")
            self.speed_label.setText(f"{e.result.get('steps', '–')} steps in "
                                     f"{fmt_duration(e.result.get('elapsed_s'))}" +
                                     (f" · final loss {final:.4f}" if isinstance(final, (int, float)) else ""))
            r = e.result
            words = [f"{r.get('steps', '?')} of {r.get('total_steps', '?')} steps"]
            if isinstance(final, (int, float)):
                words.append(f"final loss {final:.4f}")
            for key, label in (("adapter_path", "adapter"), ("kohya_path", "kohya export"),
                               ("checkpoint", "checkpoint")):
                if r.get(key):
                    words.append(f"{label}: {r[key]}")
            self.append_log(("Stopped (resume continues from the checkpoint): " if stopped else "Finished: ") +
                            "; ".join(words))
            self.plot.redraw()
            self.run_finished.emit(dict(e.result))
        elif isinstance(e, ev.Failed):
            self.status_label.setText("Failed.")
            self.append_log(f"error: {e.message}" + (f"\nwhat to do: {e.advice}" if e.advice else ""))
            self.show_failure(e.message, e.advice)
            self.run_failed.emit(e.message, e.advice)

    def _drop_samples_from(self, step: int) -> None:
        for i in reversed(range(self.samples.count())):
            if self.samples.item(i).data(Qt.UserRole + 1) >= step:
                self.samples.takeItem(i)

    def add_sample(self, path: str, step: int, prompt: str = "") -> None:
        pix = QPixmap(path)
        if pix.isNull():
            return
        item = QListWidgetItem(QIcon(pix), f"step {step}")
        item.setToolTip(f"{prompt}\n{path}" if prompt else path)
        item.setData(Qt.UserRole, path)
        item.setData(Qt.UserRole + 1, step)
        self.samples.addItem(item)
        self.samples.scrollToItem(item)

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
        """Show a finished run's curves, samples and result from its events.jsonl (and config)."""
        folder = Path(folder)
        events_path = folder / "events.jsonl" if folder.is_dir() else folder
        if folder.is_dir() and (folder / "config.toml").exists():  # (the engine writes config.toml)
            try:
                self.set_config(cfgmod.load(folder / "config.toml"))
            except cfgmod.ConfigError as exc:
                self.append_log(f"warning: {exc}")
        events = workers.events_from_file(str(events_path))
        self.plot.clear()
        self.samples.clear()
        self._t0 = time.monotonic()
        base = events_path.parent
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
        self.append_log(f"Loaded run {events_path} ({len(events)} events).")
        return len(events)
