"""The main window: three tabs over one run configuration, a File menu with recent items, a GPU status."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget

from lora_studio import __version__
from lora_studio import config as cfgmod
from lora_studio.gui import settings_store, theme, workers
from lora_studio.gui.dataset_tab import DatasetTab
from lora_studio.gui.preview_tab import PreviewTab
from lora_studio.gui.training_tab import GIB, TrainingTab
from lora_studio.gui.widgets.wheel_guard import guard_wheel

TABS = {"dataset": 0, "training": 1, "preview": 2}
MAX_RECENT = 8


def demo_dataset() -> Path:
    from lora_studio.core.demo import demo_dataset_path

    return demo_dataset_path("subject")


class MainWindow(QMainWindow):
    gpu_detected = Signal(dict)

    def __init__(self, settings: QSettings | None = None, first_run: bool | None = None, probe_gpu: bool = True):
        super().__init__()
        self.settings = settings or QSettings("LoRA Studio", "LoRA Studio")
        self.setWindowTitle("LoRA Studio")
        self.setWindowIcon(theme.app_icon())
        self.resize(1400, 900)
        self._closing = False
        self._form_owner: str | None = None  # dataset whose settings the form already holds (demo, a config)
        self.gpu: dict = {"name": "CPU", "total": 0, "cuda": False}

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(False)
        self.dataset_tab = DatasetTab()
        self.training_tab = TrainingTab()
        self.preview_tab = PreviewTab()
        self.tabs.addTab(self.dataset_tab, "Dataset")
        self.tabs.addTab(self.training_tab, "Training")
        self.tabs.addTab(self.preview_tab, "Preview")
        self.setCentralWidget(self.tabs)

        self._connect_tabs()
        self._build_menu()
        self.gpu_label = QLabel("Detecting GPU…")
        self.statusBar().addPermanentWidget(self.gpu_label)
        self.statusBar().showMessage("Ready.", 3000)

        guard_wheel(self)
        self._form_loaded()  # the Bucket column and the caption check follow the form from the start
        self.system_probe = None
        self._set_ready(not probe_gpu)
        if probe_gpu:
            self.system_probe = workers.SystemProbe(self)
            self.system_probe.found.connect(self.set_gpu)
            self.system_probe.start()

        if first_run is None:
            first_run = not self.settings.value("first_run_done", False, type=bool)
        if first_run:
            self.open_demo()
            self.settings.setValue("first_run_done", True)
        else:
            self.restore_settings()

    def _connect_tabs(self) -> None:
        """One configuration, three views of it."""
        self.dataset_tab.dataset_opened.connect(self._dataset_opened)
        self.training_tab.form.changed.connect(self._form_changed)
        self.training_tab.form.loaded.connect(self._form_loaded)
        self.training_tab.model_facts_changed.connect(self._buckets_changed)
        self.preview_tab.lora_added.connect(guard_wheel)
        self.training_tab.run_finished.connect(self._run_finished)
        self.training_tab.run_started.connect(self._run_started)
        self.training_tab.running_changed.connect(self._running_changed)
        self.dataset_tab.status.connect(lambda m: self.statusBar().showMessage(m, 6000))

    def _set_ready(self, ready: bool) -> None:
        """Job buttons wait for the start-up thread's heavy imports (two threads importing them at once fail)."""
        self.ready = ready
        self.training_tab.set_ready(ready)
        self.preview_tab.set_ready(ready)
        if not ready:
            self.statusBar().showMessage("Loading the training libraries… Start and Generate wake up when done.")

    # -------------------------------------------------------------------------------------------- menu
    def _build_menu(self) -> None:
        menu = self.menuBar().addMenu("&File")
        self._action(menu, "&Open dataset folder…", self._pick_dataset, QKeySequence.Open)
        self._action(menu, "Open &demo dataset and model", self.open_demo)
        menu.addSeparator()
        self._action(menu, "Open run &config…", self._pick_config)
        self._action(menu, "&Save run config…", self._save_config, QKeySequence.Save)
        self._action(menu, "Open finished &run…", self._pick_run)
        self._action(menu, "Reset settings to &defaults", self.reset_settings)
        menu.addSeparator()
        self.recent_menu = menu.addMenu("&Recent")
        self._refresh_recent()
        menu.addSeparator()
        self._action(menu, "&Quit", self.close, QKeySequence.Quit)
        edit = self.menuBar().addMenu("&Edit")
        undo = self.dataset_tab.model.undo_stack.createUndoAction(self, "&Undo caption edit")
        undo.setShortcut(QKeySequence.Undo)
        redo = self.dataset_tab.model.undo_stack.createRedoAction(self, "&Redo caption edit")
        redo.setShortcut(QKeySequence.Redo)
        edit.addAction(undo)
        edit.addAction(redo)
        helpm = self.menuBar().addMenu("&Help")
        self._action(helpm, "&About LoRA Studio", self._about)

    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(shortcut)
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def _about(self) -> None:
        QMessageBox.about(self, "About LoRA Studio",
                          f"<b>LoRA Studio {__version__}</b><p>Train LoRA and DreamBooth-LoRA adapters for Stable "
                          "Diffusion 1.5 and SDXL, caption by hand, preview blends with sliders.</p>")

    # ------------------------------------------------------------------------------------------ recent
    def recent(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [v for v in (value or []) if isinstance(v, str)]

    def add_recent(self, kind: str, path: str) -> None:
        entry = f"{kind}:{os.path.abspath(path)}"
        items = [entry] + [r for r in self.recent() if r != entry]
        self.settings.setValue("recent", items[:MAX_RECENT])
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        items = self.recent()
        if not items:
            act = self.recent_menu.addAction("(nothing yet)")
            act.setEnabled(False)
            return
        labels = {"dataset": "Dataset", "config": "Config", "run": "Run"}
        for entry in items:
            kind, _, path = entry.partition(":")
            act = self.recent_menu.addAction(f"{labels.get(kind, kind)}: {path}")
            act.triggered.connect(lambda _=False, k=kind, p=path: self.open_recent(k, p))

    def open_recent(self, kind: str, path: str) -> None:
        if kind == "dataset":
            self.open_dataset(path)
        elif kind == "config":
            self.open_config(path)
        elif kind == "run":
            self.open_run(path)

    # ------------------------------------------------------------------------------------------ opening
    def _pick_dataset(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a dataset folder")
        if path:
            self.open_dataset(path)

    def open_dataset(self, path: str) -> None:
        self.tabs.setCurrentIndex(TABS["dataset"])
        self.dataset_tab.open_folder(path)

    def _dataset_opened(self, path: str, n: int) -> None:
        path = os.path.abspath(path)
        self.add_recent("dataset", path)
        message = f"Opened {path}: {n} images."
        form = self.training_tab.form
        if self._form_owner != path and os.path.abspath(form.value("train_data_dir") or ".") != path:
            # a dataset opened on its own brings back the settings of its last run
            last = settings_store.last_run_config(self.settings, path)
            if last is not None:
                self.training_tab.set_config(last)
                message += f" Settings of its last run loaded ({last.output_dir})."
        self._form_owner = None
        form.set_values({"train_data_dir": path})
        self.statusBar().showMessage(message, 8000)

    def open_demo(self) -> None:
        """First run: the demo dataset and demo model, so a newcomer sees everything working at once."""
        from lora_studio.core.demo.recipe import first_run_values

        ds = demo_dataset()
        self.training_tab.model_picker.set_model("demo")
        self.preview_tab.model_picker.set_model("demo")
        # The demo's one recipe (core/demo/recipe.py): what `lora-studio demo` trains and the judge scores.
        from lora_studio.paths import runs_dir

        values = first_run_values(str(runs_dir() / "demo-subject"))  # the same runs folder as every other run
        prompt = values["instance_prompt"]
        if ds.is_dir():
            values["train_data_dir"] = str(ds)
            self._form_owner = str(ds)
        self.training_tab.form.set_values(values)
        self.preview_tab.prompt.setPlainText(prompt)
        if ds.is_dir():
            self.dataset_tab.open_folder(str(ds))
        self.statusBar().showMessage("Demo loaded: a tiny model and dataset that train in minutes on a CPU.", 8000)

    def _pick_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open run config", "", "Run config (*.toml)")
        if path:
            self.open_config(path)

    def open_config(self, path: str) -> bool:
        try:
            cfg = cfgmod.load(path)
        except cfgmod.ConfigError as exc:
            QMessageBox.warning(self, "Run config", str(exc))
            return False
        self.training_tab.set_config(cfg)
        self.preview_tab.model_picker.set_model(cfg.pretrained_model_name_or_path)
        if cfg.train_data_dir and os.path.isdir(cfg.train_data_dir):
            self._form_owner = os.path.abspath(cfg.train_data_dir)  # the config's settings stay
            self.dataset_tab.open_folder(cfg.train_data_dir)
        self.add_recent("config", path)
        self.statusBar().showMessage(f"Loaded {path}.", 6000)
        return True

    def _save_config(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save run config", "run.toml", "Run config (*.toml)")
        if path:
            self.save_config(path)

    def save_config(self, path: str) -> bool:
        try:
            cfgmod.save(self.training_tab.config(), path)
        except cfgmod.ConfigError as exc:
            self.training_tab.form.highlight(exc.key)
            QMessageBox.warning(self, "Run config", str(exc))
            return False
        self.add_recent("config", path)
        self.statusBar().showMessage(f"Saved {path}.", 6000)
        return True

    def _pick_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a finished run's output folder")
        if path:
            self.open_run(path)

    def open_run(self, path: str) -> None:
        try:
            self.training_tab.load_run(path)
        except (OSError, ValueError) as exc:
            QMessageBox.warning(self, "Open run", f"Could not read the run in {path}: {exc}")
            return
        self.tabs.setCurrentIndex(TABS["training"])
        self.add_recent("run", path)
        self._offer_lora(path)

    # ------------------------------------------------------------------------------------------- state
    def _form_changed(self, name: str) -> None:
        if name in ("resolution", "model_family", "enable_bucket", "bucket_no_upscale"):
            self._buckets_changed()
        elif name == "mode":
            self.dataset_tab.set_mode(self.training_tab.form.value("mode"))

    def _form_loaded(self) -> None:
        self.dataset_tab.set_mode(self.training_tab.form.value("mode"))
        self._buckets_changed()

    def _buckets_changed(self, *_) -> None:
        """The Dataset tab's Bucket column shows the buckets of the run the Training tab would start."""
        form = self.training_tab.form
        self.dataset_tab.model.set_plan(self.training_tab.model_picker.model() or "demo", form.value("resolution"),
                                        sdxl=self.training_tab.model_family() == "sdxl",
                                        enable_bucket=form.value("enable_bucket"),
                                        no_upscale=form.value("bucket_no_upscale"))

    def set_gpu(self, info: dict) -> None:
        self.gpu = info
        self._set_ready(True)
        self.statusBar().showMessage("Ready.", 3000)
        if info.get("cuda") and info.get("total"):
            self.gpu_label.setText(f"GPU: {info['name']} · {info['total'] / GIB:.1f} GiB")
        elif info.get("backend") == "mps":
            self.gpu_label.setText("Apple GPU (MPS)")
        else:
            self.gpu_label.setText("CPU (no CUDA GPU)")
        self.training_tab.set_gpu(info)
        if info.get("check_ok") is False:
            self.gpu_label.setText(self.gpu_label.text() + " · setup problem")
            self.gpu_label.setToolTip(f"{info.get('check_message', '')}\n{info.get('check_advice', '')}")
            self.statusBar().showMessage(f"{info.get('check_message', '')} {info.get('check_advice', '')}")
        self.gpu_detected.emit(info)

    def _run_started(self) -> None:
        cfg = self.training_tab.config()
        settings_store.remember_run(self.settings, cfg.train_data_dir, cfg.output_dir)

    def _run_finished(self, result: dict) -> None:
        out = result.get("output_dir") or self.training_tab.form.value("output_dir")
        self._offer_lora(out)

    def _offer_lora(self, folder: str) -> None:
        lora = Path(folder) / "pytorch_lora_weights.safetensors"
        if lora.exists() and all(r.path != str(lora) for r in self.preview_tab.rows):
            self.preview_tab.add_lora(str(lora))

    def _running_changed(self, running: bool) -> None:
        self.tabs.setTabText(TABS["training"], "Training ●" if running else "Training")
        if not running and self._closing:
            self.close()

    # ---------------------------------------------------------------------------------------- settings
    def save_settings(self) -> None:
        settings_store.save(self.settings, self.training_tab, self.preview_tab)

    def restore_settings(self) -> None:
        problem = settings_store.restore(self.settings, self.training_tab, self.preview_tab)
        if problem:
            self.statusBar().showMessage(f"Saved settings not restored: {problem}", 10000)

    def reset_settings(self) -> None:
        """Defaults for every setting (the open dataset stays open); nothing remembered is kept."""
        settings_store.clear(self.settings)
        settings_store.reset(self.training_tab, self.preview_tab, self.dataset_tab.path or "")
        self.statusBar().showMessage("Settings reset to their defaults.", 6000)

    # ------------------------------------------------------------------------------------------- close
    def confirm_close_during_run(self) -> bool:
        answer = QMessageBox.question(
            self, "Training is running",
            "A training run is in progress. Stop it (a resumable checkpoint is saved) and quit?",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    def closeEvent(self, event) -> None:
        if self.training_tab.is_running():
            if self._closing or self.confirm_close_during_run():
                self._closing = True
                self.training_tab.stop()
                self.statusBar().showMessage("Stopping the run and saving a checkpoint before quitting…")
            event.ignore()  # closes itself once the run has stopped (see _running_changed)
            return
        self.save_settings()
        self.preview_tab.shutdown()
        self.dataset_tab.shutdown()
        self.training_tab.shutdown()
        if self.system_probe is not None:
            self.system_probe.wait(10000)
        event.accept()
