"""The main window: three tabs over one run configuration, a File menu with recent items, a GPU status."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget

from lora_studio import __version__
from lora_studio import config as cfgmod
from lora_studio.gui import theme, workers
from lora_studio.gui.dataset_tab import DatasetTab
from lora_studio.gui.preview_tab import PreviewTab
from lora_studio.gui.training_tab import GIB, TrainingTab

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

        # one configuration, three views of it
        self.dataset_tab.config_provider = self.training_tab.config
        self.dataset_tab.dataset_opened.connect(self._dataset_opened)
        self.dataset_tab.dreambooth_changed.connect(self.training_tab.form.set_values)
        self.training_tab.form.changed.connect(self._form_changed)
        self.training_tab.run_finished.connect(self._run_finished)
        self.training_tab.running_changed.connect(self._running_changed)
        self.dataset_tab.status.connect(lambda m: self.statusBar().showMessage(m, 6000))

        self._build_menu()
        self.gpu_label = QLabel("Detecting GPU…")
        self.statusBar().addPermanentWidget(self.gpu_label)
        self.statusBar().showMessage("Ready.", 3000)

        self.system_probe = None
        if probe_gpu:
            self.system_probe = workers.SystemProbe(self)
            self.system_probe.found.connect(self.set_gpu)
            self.system_probe.start()

        if first_run is None:
            first_run = not self.settings.value("first_run_done", False, type=bool)
        if first_run:
            self.open_demo()
            self.settings.setValue("first_run_done", True)

    # -------------------------------------------------------------------------------------------- menu
    def _build_menu(self) -> None:
        menu = self.menuBar().addMenu("&File")
        self._action(menu, "&Open dataset folder…", self._pick_dataset, QKeySequence.Open)
        self._action(menu, "Open &demo dataset and model", self.open_demo)
        menu.addSeparator()
        self._action(menu, "Open run &config…", self._pick_config)
        self._action(menu, "&Save run config…", self._save_config, QKeySequence.Save)
        self._action(menu, "Open finished &run…", self._pick_run)
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
        self.add_recent("dataset", path)
        self.training_tab.form.set_values({"train_data_dir": path})
        self.statusBar().showMessage(f"Opened {path}: {n} images.", 6000)

    def open_demo(self) -> None:
        """First run: the demo dataset and demo model, so a newcomer sees everything working at once."""
        from lora_studio.core.demo.recipe import first_run_values

        ds = demo_dataset()
        self.training_tab.model_picker.set_model("demo")
        self.preview_tab.model_picker.set_model("demo")
        # The demo's one recipe (core/demo/recipe.py): what `lora-studio demo` trains and the judge scores.
        values = first_run_values(os.path.join(os.path.expanduser("~"), "lora-studio-runs", "demo-subject"))
        prompt = values["instance_prompt"]
        if ds.is_dir():
            values["train_data_dir"] = str(ds)
        self.training_tab.form.set_values(values)
        self.dataset_tab.set_dreambooth_values(self.training_tab.form.values())
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
        self.dataset_tab.set_dreambooth_values(cfg.to_dict())
        if cfg.train_data_dir and os.path.isdir(cfg.train_data_dir):
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
        if name in ("instance_prompt", "class_prompt", "class_data_dir", "num_class_images",
                    "with_prior_preservation"):
            self.dataset_tab.set_dreambooth_values(self.training_tab.form.values())
        elif name in ("resolution", "model_family"):
            self.dataset_tab.model.set_resolution(self.training_tab.form.value("resolution"),
                                                  self.training_tab.model_family() == "sdxl")

    def set_gpu(self, info: dict) -> None:
        self.gpu = info
        if info.get("cuda") and info.get("total"):
            self.gpu_label.setText(f"GPU: {info['name']} · {info['total'] / GIB:.1f} GiB")
        else:
            self.gpu_label.setText("CPU (no CUDA GPU)")
        self.training_tab.set_gpu(info)
        if info.get("check_ok") is False:
            self.gpu_label.setText(self.gpu_label.text() + " · setup problem")
            self.gpu_label.setToolTip(f"{info.get('check_message', '')}\n{info.get('check_advice', '')}")
            self.statusBar().showMessage(f"{info.get('check_message', '')} {info.get('check_advice', '')}")
        self.gpu_detected.emit(info)

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
        self.preview_tab.shutdown()
        self.dataset_tab.shutdown()
        if self.system_probe is not None:
            self.system_probe.wait(10000)
        event.accept()
