"""Preview tab: a base model, LoRAs with weight sliders, prompt settings, a zoomable result and history."""

from __future__ import annotations

import os
import re
import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFileDialog, QGroupBox, QHBoxLayout, QLabel, QMessageBox, QProgressBar, QPushButton,
                               QScrollArea, QSplitter, QVBoxLayout, QWidget)

from lora_studio.core import events as ev
from lora_studio.gui import workers
from lora_studio.gui.dialogs.grid import GridDialog, GridResult
from lora_studio.gui.dialogs.merge import MergeDialog
from lora_studio.gui.widgets.image_view import save_png, to_qimage
from lora_studio.gui.widgets.lora_panel import LoraPanel
from lora_studio.gui.widgets.lora_row import LoraRow
from lora_studio.gui.widgets.model_picker import ModelPicker
from lora_studio.gui.widgets.prompt_panel import PromptPanel
from lora_studio.gui.widgets.result_panel import HistoryStrip, ResultPanel


class PreviewTab(QWidget):
    image_ready = Signal(dict)
    lora_added = Signal(object)  # the new LoraRow
    grid_ready = Signal(dict)
    model_loaded = Signal(str, int)
    merged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.worker = workers.PreviewWorker(self)
        self.worker.image.connect(self._on_image)
        self.worker.grid.connect(self._on_grid)
        self.worker.event.connect(self._on_event)
        self.worker.error.connect(self._on_error)
        self.worker.busy.connect(self._on_busy)
        self.worker.model_loaded.connect(self._on_model_loaded)
        self.worker.merged.connect(self._on_merged)
        self.rows: list[LoraRow] = []
        self.history: list[tuple[object, dict]] = []
        self.images_made = 0
        self.model_loads = 0
        self.ready = True  # False until the app's heavy imports are done (MainWindow)
        self.last_info: dict | None = None
        self.last_dialog = None
        self._build()

    # ------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        split = QSplitter(Qt.Horizontal)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.addWidget(split)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(self._build_left())
        scroll.setMinimumWidth(470)
        split.addWidget(scroll)
        right = QWidget()
        rlay = QVBoxLayout(right)
        rlay.setContentsMargins(6, 0, 0, 0)
        self.result = ResultPanel()
        self.result.save_requested.connect(self.save_image)
        self.view, self.info_label = self.result.view, self.result.info_label
        rlay.addWidget(self.result, 1)
        self.history_list = HistoryStrip()
        self.history_list.currentRowChanged.connect(self._show_history)
        hist_box = QGroupBox("History")
        QVBoxLayout(hist_box).addWidget(self.history_list)
        rlay.addWidget(hist_box)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([480, 900])

    def _build_left(self) -> QWidget:
        left = QWidget()
        lay = QVBoxLayout(left)
        lay.setContentsMargins(0, 0, 6, 0)
        lay.setSpacing(8)
        model_box = QGroupBox("Base model")
        self.model_picker = ModelPicker()
        QVBoxLayout(model_box).addWidget(self.model_picker)
        lay.addWidget(model_box)
        self.lora_panel = LoraPanel()
        self.empty_label, self.grid_btn, self.merge_btn = (self.lora_panel.empty_label, self.lora_panel.grid_btn,
                                                           self.lora_panel.merge_btn)
        self.lora_panel.add_btn.clicked.connect(self._pick_lora)
        self.grid_btn.clicked.connect(self.open_grid_dialog)
        self.merge_btn.clicked.connect(self.open_merge_dialog)
        lay.addWidget(self.lora_panel)
        self.prompt_panel = PromptPanel()
        pp = self.prompt_panel
        self.prompt, self.negative, self.seed, self.steps = pp.prompt, pp.negative, pp.seed, pp.steps
        self.guidance, self.width_spin, self.height_spin, self.scheduler = (pp.guidance, pp.width_spin,
                                                                            pp.height_spin, pp.scheduler)
        lay.addWidget(pp)
        self.trigger_button = QPushButton()  # offers an added LoRA's trigger phrase (hidden until one has one)
        self.trigger_button.setVisible(False)
        self.trigger_button.clicked.connect(self._use_trigger)
        lay.addWidget(self.trigger_button)
        grow = QHBoxLayout()
        self.generate_btn = QPushButton("Generate")
        self.generate_btn.setObjectName("primary")
        self.generate_btn.clicked.connect(self.generate)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.worker.cancel)
        self.cancel_btn.setEnabled(False)
        grow.addWidget(self.generate_btn, 1)
        grow.addWidget(self.cancel_btn)
        lay.addLayout(grow)
        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.status = QLabel("Pick a base model and press Generate.")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        lay.addStretch(1)
        return left

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        for b in (self.generate_btn, self.grid_btn, self.merge_btn):
            b.setEnabled(ready)

    # ------------------------------------------------------------------------------------------- LoRAs
    def _pick_lora(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add LoRA", "", "LoRA files (*.safetensors);;All files (*)")
        for p in paths:
            self.add_lora(p)

    def add_lora(self, path: str, weight: float = 1.0) -> LoraRow:
        base = re.sub(r"[^A-Za-z0-9_]", "_", LoraRow.display_name(str(path))) or "lora"
        taken = {r.adapter_name for r in self.rows}
        name, n = base, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        row = LoraRow(str(path), weight, name)
        row.changed.connect(self.regenerate)
        row.removed.connect(self.remove_lora)
        self.rows.append(row)
        self.lora_panel.show_rows(self.rows)
        self._offer_trigger(str(path))
        self.lora_added.emit(row)
        return row

    def _offer_trigger(self, path: str) -> None:
        from lora_studio.core.lora_files.metadata import lora_trigger_phrase
        from lora_studio.errors import LoraStudioError

        try:
            phrase = lora_trigger_phrase(path)
        except (LoraStudioError, OSError):
            phrase = ""  # an unreadable file is reported when the preview loads it
        if phrase and phrase.lower() not in self.prompt.toPlainText().lower():
            self.trigger_button.setText(f"Use the trigger phrase as the prompt: {phrase}")
            self.trigger_button.setProperty("phrase", phrase)
            self.trigger_button.setVisible(True)

    def _use_trigger(self) -> None:
        self.prompt.setPlainText(self.trigger_button.property("phrase"))
        self.trigger_button.setVisible(False)

    def remove_lora(self, row: LoraRow) -> None:
        self.rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self.lora_panel.show_rows(self.rows)
        self.regenerate()

    def active_loras(self) -> list[tuple[str, float]]:
        return [(r.path, r.weight()) for r in self.rows if r.enabled.isChecked()]

    def engine_loras(self) -> list[tuple[str, str, float]]:
        # a disabled LoRA stays loaded at weight 0, so ticking it again costs no reload
        return [(r.path, r.adapter_name, r.weight() if r.enabled.isChecked() else 0.0) for r in self.rows]

    # ---------------------------------------------------------------------------------------- generate
    def params(self) -> dict:
        return self.prompt_panel.params()

    def generate(self) -> None:
        self.worker.submit("generate", model=self.model_picker.model() or "demo", loras=self.engine_loras(),
                           params=self.params())
        self.status.setText("Generating…")

    def regenerate(self) -> None:
        # Only once there is something to refresh: a slider move before the first image does nothing.
        if self.images_made:
            self.generate()

    def load_model(self) -> None:
        self.worker.submit("load", model=self.model_picker.model() or "demo")

    def _on_busy(self, busy: bool) -> None:
        self.cancel_btn.setEnabled(busy)

    def _on_event(self, e) -> None:
        if isinstance(e, ev.Started):
            self.progress.setRange(0, max(1, e.total_steps))
            self.progress.setFormat("%v / %m images" if e.phase == "grid" else "%v / %m steps")
            self.progress.setValue(0)
        elif isinstance(e, ev.Progress):
            self.progress.setRange(0, max(1, e.total))
            self.progress.setValue(e.step)
        elif isinstance(e, ev.Warning):
            self.status.setText(f"Warning: {e.msg}")

    def _on_model_loaded(self, model: str, loads: int, low_memory: bool = False, int8_unet: bool = False) -> None:
        self.model_loads = loads
        # A small card: slower slider moves and prompts, so say why they are slower.
        notes = []
        if low_memory:
            notes.append("text encoders in system memory, so a new prompt takes a moment longer")
        if int8_unet:
            notes.append("the UNet stored in 8 bits (pictures differ slightly from full precision)")
        self.status.setText(f"Loaded {model}." + (f" Low-memory preview: {'; '.join(notes)}." if notes else ""))
        self.model_loaded.emit(model, loads)

    def _on_image(self, img, info: dict) -> None:
        self.images_made += 1
        self.last_info = info
        qimg = to_qimage(img)
        self.view.set_image(qimg)
        weights = ", ".join(f"{LoraRow.display_name(p)} {w:+.2f}" for p, w in info.get("loras", [])) or "no LoRA"
        self.info_label.setText(f"seed {info.get('seed')} · {weights} · {info.get('seconds', 0):.1f} s")
        self.status.setText(f"Done in {info.get('seconds', 0):.1f} s.")
        self._add_history(qimg, dict(info, kind="image"), f"{info.get('prompt', '')}\nseed {info.get('seed')} · "
                          f"{weights}")
        self.image_ready.emit(info)

    def _add_history(self, qimg, info: dict, tooltip: str) -> None:
        self.history.append((qimg, info))
        label = f"grid #{len(self.history)}" if info.get("kind") == "grid" else f"#{len(self.history)}"
        self.history_list.add_entry(qimg, label, tooltip)

    def _show_history(self, row: int) -> None:
        if 0 <= row < len(self.history):
            qimg, info = self.history[row]
            self.view.set_image(qimg)
            what = "grid" if info.get("kind") == "grid" else f"seed {info.get('seed')}"
            self.info_label.setText(f"history #{row + 1} · {what}")

    def _on_error(self, message: str, advice: str) -> None:
        self.status.setText(f"Error: {message}")
        box = QMessageBox(QMessageBox.Warning, "Preview failed", message, QMessageBox.Ok, self)
        if advice:
            box.setInformativeText(f"What to do: {advice}")
        self.last_dialog = box
        box.open()

    def save_image(self) -> None:
        if not self.view.has_image():
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save image", f"preview-{int(time.time())}.png", "PNG (*.png)")
        if not path:
            return
        try:
            path = save_png(self.view.image(), path)
        except OSError as exc:
            self._on_error(f"the image was not saved: {exc}", "choose a folder you can write to, with free space.")
            return
        self.result.open_folder.set_folder(os.path.dirname(path))
        self.status.setText(f"Saved {path}")

    # ------------------------------------------------------------------------------------ grid / merge
    def open_grid_dialog(self) -> None:
        dlg = GridDialog(self)
        dlg.open()
        self.last_dialog = dlg

    def run_grid(self, adapter: str, weights: list[float], seeds: list[int],
                 checkpoints: list[tuple[str, str]] | None = None) -> None:
        self.worker.submit("grid", model=self.model_picker.model() or "demo", loras=self.engine_loras(),
                           params=self.params(), adapter=adapter, weights=weights, seeds=seeds,
                           checkpoints=checkpoints)
        self.status.setText("Making the comparison grid…")

    def _on_grid(self, img, info: dict) -> None:
        qimg = to_qimage(img)
        info = dict(info, kind="grid")
        rows = "checkpoints" if info.get("checkpoints") else f"weights {info.get('weights')}"
        self._add_history(qimg, info, f"comparison grid: {rows} × seeds {info.get('seeds')}")
        dlg = GridResult(qimg, info, self)
        dlg.open()
        self.last_dialog = dlg
        self.status.setText("Comparison grid ready: Save keeps it with its settings.")
        self.grid_ready.emit(info)

    def open_merge_dialog(self) -> None:
        dlg = MergeDialog(self, self.active_loras(), self.model_picker.model())
        dlg.open()
        self.last_dialog = dlg

    def _on_merged(self, path: str) -> None:
        self.status.setText(f"Merged into {os.path.abspath(path)}")
        self.result.open_folder.set_folder(os.path.dirname(os.path.abspath(path)))
        self.merged.emit(path)

    def shutdown(self) -> None:
        self.worker.shutdown()
