"""Preview tab: a base model, LoRAs with weight sliders, prompt settings, a zoomable result and history."""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QMessageBox, QPlainTextEdit, QProgressBar, QPushButton, QRadioButton, QScrollArea,
                               QSlider, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem, QToolButton, QVBoxLayout,
                               QWidget)

from lora_studio.core import events as ev
from lora_studio.gui import workers
from lora_studio.gui.widgets.image_view import ImageView, to_qimage
from lora_studio.gui.widgets.model_picker import ModelPicker

# the preview engine accepts these labels (core.inference.engine.SCHEDULERS)
SCHEDULERS = ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC"]
SLIDER_SCALE = 100  # slider ticks per unit weight


class LoraRow(QWidget):
    """One LoRA: enable box, name, weight slider and spin box (-2..2), remove button."""

    changed = Signal()  # weight settled or enable toggled: regenerate
    removed = Signal(object)

    def __init__(self, path: str, weight: float = 1.0, adapter_name: str = "lora", parent=None):
        super().__init__(parent)
        self.path = path
        self.adapter_name = adapter_name  # stable while the row lives: the engine keeps the adapter loaded
        lay = QHBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(6)
        self.enabled = QCheckBox()
        self.enabled.setChecked(True)
        self.enabled.setToolTip("Use this LoRA")
        self.name = QLabel(self.display_name(path))
        self.name.setToolTip(path)
        self.name.setMinimumWidth(110)
        self.name.setMaximumWidth(170)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(-2 * SLIDER_SCALE, 2 * SLIDER_SCALE)
        self.slider.setSingleStep(5)
        self.slider.setPageStep(25)
        self.slider.setTickInterval(SLIDER_SCALE // 2)
        self.slider.setTickPosition(QSlider.TicksBelow)
        self.slider.setMinimumWidth(120)
        self.spin = QDoubleSpinBox()
        self.spin.setRange(-2.0, 2.0)
        self.spin.setSingleStep(0.05)
        self.spin.setDecimals(2)
        self.spin.setFixedWidth(72)
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove this LoRA")
        remove.clicked.connect(lambda: self.removed.emit(self))
        for w in (self.enabled, self.name):
            lay.addWidget(w)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.spin)
        lay.addWidget(remove)
        # A settled value regenerates: the slider's release, or a short pause after keys / spin box edits.
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(250)
        self._settle.timeout.connect(self.changed)
        self.slider.valueChanged.connect(self._from_slider)
        self.slider.sliderReleased.connect(self._released)
        self.spin.valueChanged.connect(self._from_spin)
        self.enabled.toggled.connect(lambda _: self.changed.emit())
        self.set_weight(weight)

    @staticmethod
    def display_name(path: str) -> str:
        p = Path(path)
        if p.name in ("pytorch_lora_weights.safetensors",) and p.parent.name:
            return p.parent.name
        return p.stem

    def weight(self) -> float:
        return round(self.spin.value(), 4)

    def set_weight(self, w: float) -> None:
        self.spin.blockSignals(True)
        self.slider.blockSignals(True)
        self.spin.setValue(w)
        self.slider.setValue(round(w * SLIDER_SCALE))
        self.spin.blockSignals(False)
        self.slider.blockSignals(False)

    def _from_slider(self, v: int) -> None:
        self.spin.blockSignals(True)
        self.spin.setValue(v / SLIDER_SCALE)
        self.spin.blockSignals(False)
        if not self.slider.isSliderDown():
            self._settle.start()

    def _released(self) -> None:
        self._settle.stop()
        self.changed.emit()

    def _from_spin(self, v: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(v * SLIDER_SCALE))
        self.slider.blockSignals(False)
        self._settle.start()


class PreviewTab(QWidget):
    image_ready = Signal(dict)
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
        self.last_info: dict | None = None
        self.last_dialog = None
        self._build()

    # ------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        split = QSplitter(Qt.Horizontal)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.addWidget(split)

        left = QWidget()
        llay = QVBoxLayout(left)
        llay.setContentsMargins(0, 0, 6, 0)
        llay.setSpacing(8)
        model_box = QGroupBox("Base model")
        mlay = QVBoxLayout(model_box)
        self.model_picker = ModelPicker()
        mlay.addWidget(self.model_picker)
        llay.addWidget(model_box)

        lora_box = QGroupBox("LoRAs")
        self.lora_lay = QVBoxLayout(lora_box)
        self.lora_lay.setSpacing(2)
        self.empty_label = QLabel("No LoRA yet: add a trained adapter (.safetensors) to blend it in.")
        self.empty_label.setObjectName("hint")
        self.empty_label.setWordWrap(True)
        self.lora_lay.addWidget(self.empty_label)
        brow = QHBoxLayout()
        add = QPushButton("Add LoRA…")
        add.clicked.connect(self._pick_lora)
        self.grid_btn = QPushButton("Comparison grid…")
        self.grid_btn.clicked.connect(self.open_grid_dialog)
        self.merge_btn = QPushButton("Merge…")
        self.merge_btn.clicked.connect(self.open_merge_dialog)
        brow.addWidget(add)
        brow.addStretch(1)
        brow.addWidget(self.grid_btn)
        brow.addWidget(self.merge_btn)
        self.lora_lay.addLayout(brow)
        llay.addWidget(lora_box)

        gen_box = QGroupBox("Prompt and sampling")
        form = QFormLayout(gen_box)
        form.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.prompt = QPlainTextEdit("a photo of sks toy on a wooden table")
        self.prompt.setFixedHeight(58)
        self.negative = QLineEdit()
        self.negative.setPlaceholderText("what to avoid, e.g. blurry, low quality")
        seed_row = QHBoxLayout()
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(42)
        dice = QToolButton()
        dice.setText("⚄")
        dice.setToolTip("Random seed")
        dice.clicked.connect(lambda: self.seed.setValue(random.randrange(2**31 - 1)))
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(dice)
        self.steps = QSpinBox()
        self.steps.setRange(1, 150)
        self.steps.setValue(12)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 30.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(7.5)
        size_row = QHBoxLayout()
        self.width_spin = QSpinBox()
        self.height_spin = QSpinBox()
        for s in (self.width_spin, self.height_spin):
            s.setRange(0, 4096)
            s.setSingleStep(64)
            s.setSpecialValueText("model's own")  # 0: the base model's native size
            s.setValue(0)
        size_row.addWidget(self.width_spin, 1)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_spin, 1)
        self.scheduler = QComboBox()
        self.scheduler.addItems(SCHEDULERS)
        form.addRow("Prompt:", self.prompt)
        self.trigger_button = QPushButton()  # offers an added LoRA's trigger phrase (hidden until one has one)
        self.trigger_button.setVisible(False)
        self.trigger_button.clicked.connect(self._use_trigger)
        form.addRow("", self.trigger_button)
        form.addRow("Negative:", self.negative)
        form.addRow("Seed:", seed_row)
        form.addRow("Steps:", self.steps)
        form.addRow("Guidance:", self.guidance)
        form.addRow("Size:", size_row)
        form.addRow("Scheduler:", self.scheduler)
        llay.addWidget(gen_box)
        grow = QHBoxLayout()
        self.generate_btn = QPushButton("Generate")
        self.generate_btn.setObjectName("primary")
        self.generate_btn.clicked.connect(self.generate)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.worker.cancel)
        self.cancel_btn.setEnabled(False)
        grow.addWidget(self.generate_btn, 1)
        grow.addWidget(self.cancel_btn)
        llay.addLayout(grow)
        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        llay.addWidget(self.progress)
        self.status = QLabel("Pick a base model and press Generate.")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        llay.addWidget(self.status)
        llay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(left)
        scroll.setMinimumWidth(470)
        split.addWidget(scroll)

        right = QWidget()
        rlay = QVBoxLayout(right)
        rlay.setContentsMargins(6, 0, 0, 0)
        view_box = QGroupBox("Result")
        vlay = QVBoxLayout(view_box)
        tools = QHBoxLayout()
        for text, tip, slot in (("Fit", "Fit the image to the view (double-click)", lambda: self.view.fit()),
                                ("Zoom in", "Zoom in (mouse wheel)", lambda: self.view.zoom(1.25)),
                                ("Zoom out", "Zoom out (mouse wheel)", lambda: self.view.zoom(0.8)),
                                ("Save…", "Save the image as PNG", self.save_image)):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            tools.addWidget(b)
        tools.addStretch(1)
        self.info_label = QLabel("")
        self.info_label.setObjectName("hint")
        tools.addWidget(self.info_label)
        vlay.addLayout(tools)
        self.view = ImageView(placeholder="Press Generate to make a preview")
        vlay.addWidget(self.view, 1)
        rlay.addWidget(view_box, 1)
        hist_box = QGroupBox("History")
        hlay = QVBoxLayout(hist_box)
        self.history_list = QListWidget()
        self.history_list.setViewMode(QListWidget.IconMode)
        self.history_list.setFlow(QListWidget.LeftToRight)
        self.history_list.setWrapping(False)
        self.history_list.setIconSize(QSize(80, 80))
        self.history_list.setFixedHeight(118)
        self.history_list.setMovement(QListWidget.Static)
        self.history_list.currentRowChanged.connect(self._show_history)
        hlay.addWidget(self.history_list)
        rlay.addWidget(hist_box)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([480, 900])

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
        self.lora_lay.insertWidget(len(self.rows), row)
        self.empty_label.setVisible(False)
        self._offer_trigger(str(path))
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
        self.empty_label.setVisible(not self.rows)
        self.regenerate()

    def active_loras(self) -> list[tuple[str, float]]:
        return [(r.path, r.weight()) for r in self.rows if r.enabled.isChecked()]

    def engine_loras(self) -> list[tuple[str, str, float]]:
        # a disabled LoRA stays loaded at weight 0, so ticking it again costs no reload
        return [(r.path, r.adapter_name, r.weight() if r.enabled.isChecked() else 0.0) for r in self.rows]

    # ---------------------------------------------------------------------------------------- generate
    def params(self) -> dict:
        return dict(prompt=self.prompt.toPlainText().strip(), negative=self.negative.text().strip(),
                    seed=self.seed.value(), steps=self.steps.value(), guidance=self.guidance.value(),
                    width=self.width_spin.value(), height=self.height_spin.value(),
                    scheduler=self.scheduler.currentText())

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
            self.progress.setFormat("%v / %m steps")
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
        self.history.append((qimg, info))
        item = QListWidgetItem(QIcon(QPixmap.fromImage(qimg)), f"#{len(self.history)}")
        item.setToolTip(f"{info.get('prompt', '')}\nseed {info.get('seed')} · {weights}")
        self.history_list.blockSignals(True)
        self.history_list.addItem(item)
        self.history_list.setCurrentItem(item)
        self.history_list.scrollToItem(item)
        self.history_list.blockSignals(False)
        self.image_ready.emit(info)

    def _show_history(self, row: int) -> None:
        if 0 <= row < len(self.history):
            qimg, info = self.history[row]
            self.view.set_image(qimg)
            self.info_label.setText(f"history #{row + 1} · seed {info.get('seed')}")

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
        if path:
            self.view.image().save(path)

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
        dlg = QDialog(self)
        dlg.setWindowTitle("Comparison grid")
        lay = QVBoxLayout(dlg)
        rows = "checkpoints" if info.get("checkpoints") else f"weights of {info.get('adapter')}"
        lay.addWidget(QLabel(f"Rows: {rows} · columns: seeds {info.get('seeds')}"))
        view = ImageView()
        view.set_image(img)
        lay.addWidget(view)
        dlg.resize(900, 700)
        dlg.open()
        self.last_dialog = dlg
        self.status.setText("Comparison grid ready.")

    def open_merge_dialog(self) -> None:
        dlg = MergeDialog(self, self.active_loras(), self.model_picker.model())
        dlg.open()
        self.last_dialog = dlg

    def _on_merged(self, path: str) -> None:
        self.status.setText(f"Merged into {path}")
        self.merged.emit(path)

    def shutdown(self) -> None:
        self.worker.shutdown()


def _numbers(text: str, cast):
    return [cast(t) for t in text.replace(";", ",").split(",") if t.strip()]


class GridDialog(QDialog):
    """Weight x seed for one LoRA, or checkpoint x seed for a run's saved checkpoints."""

    def __init__(self, tab: PreviewTab):
        super().__init__(tab)
        self.tab = tab
        self.setWindowTitle("Comparison grid")
        self.setMinimumWidth(460)
        form = QFormLayout(self)
        self.adapter = QComboBox()
        for r in tab.rows:
            self.adapter.addItem(LoraRow.display_name(r.path), r)
        self.by_weight = QRadioButton("Weight × seed")
        self.by_checkpoint = QRadioButton("Checkpoint × seed (from the LoRA's run folder)")
        self.by_weight.setChecked(True)
        self.weights = QLineEdit("0, 0.5, 1.0, 1.5")
        self.seeds = QLineEdit(f"{tab.seed.value()}, {tab.seed.value() + 1}")
        form.addRow("LoRA:", self.adapter)
        form.addRow("", self.by_weight)
        form.addRow("", self.by_checkpoint)
        form.addRow("Weights (rows):", self.weights)
        form.addRow("Seeds (columns):", self.seeds)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self._ok)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def checkpoints(self, row: LoraRow) -> list[tuple[str, str]]:
        folder = Path(row.path).parent / "checkpoints"
        found = []
        for d in sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])
                        if p.name.split("-")[-1].isdigit() else -1):
            f = d / "pytorch_lora_weights.safetensors"
            if f.exists():
                found.append((d.name.replace("checkpoint-", "step "), str(f)))
        found.append(("final", row.path))
        return found

    def _ok(self) -> None:
        row = self.adapter.currentData()
        if row is None:
            QMessageBox.warning(self, "Comparison grid", "Add a LoRA first.")
            return
        try:
            weights, seeds = _numbers(self.weights.text(), float), _numbers(self.seeds.text(), int)
        except ValueError:
            QMessageBox.warning(self, "Comparison grid", "Weights and seeds are comma-separated numbers.")
            return
        self.accept()
        checkpoints = self.checkpoints(row) if self.by_checkpoint.isChecked() else None
        self.tab.run_grid(row.adapter_name, weights, seeds, checkpoints)


class MergeDialog(QDialog):
    """Selected LoRAs with weights -> one merged LoRA file, or a fused full model folder."""

    def __init__(self, tab: PreviewTab, loras: list[tuple[str, float]], model: str):
        super().__init__(tab)
        self.tab = tab
        self.setWindowTitle("Merge LoRAs")
        self.setMinimumWidth(560)
        lay = QVBoxLayout(self)
        self.table = QTableWidget(len(loras), 2)
        self.table.setHorizontalHeaderLabels(["LoRA", "Weight"])
        self.table.horizontalHeader().setStretchLastSection(False)
        self.table.horizontalHeader().setSectionResizeMode(0, self.table.horizontalHeader().ResizeMode.Stretch)
        for i, (p, w) in enumerate(loras):
            item = QTableWidgetItem(p)
            item.setFlags(item.flags() & ~Qt.ItemIsEditable)
            self.table.setItem(i, 0, item)
            self.table.setItem(i, 1, QTableWidgetItem(f"{w:g}"))
        lay.addWidget(self.table)
        self.as_lora = QRadioButton("Merge into one LoRA file")
        self.as_model = QRadioButton(f"Fuse into a full model (base: {model})")
        self.as_lora.setChecked(True)
        rank_row = QHBoxLayout()
        self.rank = QSpinBox()
        self.rank.setRange(0, 1024)
        self.rank.setSpecialValueText("exact (ranks added up)")
        self.rank.setToolTip("0 keeps the blend exact by concatenating ranks; a number compresses to that rank by SVD.")
        rank_row.addWidget(self.as_lora)
        rank_row.addStretch(1)
        rank_row.addWidget(QLabel("Rank:"))
        rank_row.addWidget(self.rank)
        lay.addLayout(rank_row)
        lay.addWidget(self.as_model)
        row = QHBoxLayout()
        self.out = QLineEdit(os.path.join(os.getcwd(), "merged_lora.safetensors"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(QLabel("Output:"))
        row.addWidget(self.out, 1)
        row.addWidget(browse)
        lay.addLayout(row)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self._ok)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.model = model

    def _browse(self) -> None:
        if self.as_model.isChecked():
            path = QFileDialog.getExistingDirectory(self, "Folder for the fused model")
        else:
            path, _ = QFileDialog.getSaveFileName(self, "Merged LoRA", self.out.text(), "LoRA (*.safetensors)")
        if path:
            self.out.setText(path)

    def loras(self) -> list[tuple[str, float]]:
        return [(self.table.item(i, 0).text(), float(self.table.item(i, 1).text()))
                for i in range(self.table.rowCount())]

    def _ok(self) -> None:
        try:
            loras = self.loras()
        except ValueError:
            QMessageBox.warning(self, "Merge", "Each weight must be a number.")
            return
        if not loras:
            QMessageBox.warning(self, "Merge", "Add and enable at least one LoRA first.")
            return
        self.accept()
        if self.as_model.isChecked():
            self.tab.worker.submit("merge", loras=loras, out="", model=self.model, fuse_out=self.out.text())
        else:
            self.tab.worker.submit("merge", loras=loras, out=self.out.text(), rank=self.rank.value())
        self.tab.status.setText("Merging…")
