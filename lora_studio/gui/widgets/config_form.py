"""The training form, built from TrainingConfig's field metadata: labels, tooltips, bounds, choices."""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QSpinBox, QToolButton, QVBoxLayout, QWidget)

from lora_studio import config as cfgmod

GROUPS = [
    ("data", "Data"),
    ("lora", "LoRA"),
    ("optim", "Optimizer"),
    ("memory", "Memory and speed"),
    ("dreambooth", "DreamBooth prior preservation"),
    ("output", "Samples and checkpoints"),
]
# Fields shown elsewhere (model picker, dataset tab) or written by the app itself.
OWN_WIDGETS = {"schema_version", "pretrained_model_name_or_path"}
LABELS = {
    "model_family": "Model family", "output_dir": "Output folder", "train_data_dir": "Dataset folder",
    "lora_alpha": "LoRA alpha", "lora_dropout": "LoRA dropout", "lr_scheduler": "LR schedule",
    "lr_warmup_steps": "Warm-up steps", "train_batch_size": "Batch size", "max_train_steps": "Training steps",
    "gradient_accumulation_steps": "Gradient accumulation", "snr_gamma": "Min-SNR gamma",
    "text_encoder_lr": "Text encoder LR", "class_data_dir": "Class images folder", "num_class_images": "Class images",
    "validation_prompt": "Sample prompt", "validation_steps": "Sample every", "num_validation_images": "Samples each",
    "checkpointing_steps": "Checkpoint every", "checkpoints_total_limit": "Keep checkpoints",
    "with_prior_preservation": "Prior preservation",
    "adam_beta1": "Adam beta1", "adam_beta2": "Adam beta2", "adam_epsilon": "Adam epsilon",
    "adam_weight_decay": "Weight decay", "max_grad_norm": "Gradient clipping", "report_to": "Log to",
    "fast_path": "CUDA-graph fast path", "enable_bucket": "Aspect-ratio buckets", "instance_prompt": "Instance prompt",
    "int8_base": "8-bit base model", "compile_unet": "Compile the UNet",
}
SUFFIXES = {"resolution": " px", "validation_steps": " steps", "checkpointing_steps": " steps",
            "lr_warmup_steps": " steps", "max_train_steps": " steps", "num_validation_images": " images",
            "sample_steps": " steps", "num_class_images": " images", "repeats": "×"}
PATH_FIELDS = {"output_dir": "dir", "train_data_dir": "dir", "class_data_dir": "dir"}
INT_LIMIT = 2**31 - 1


def label_for(name: str) -> str:
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def tooltip_for(f: dataclasses.Field) -> str:
    meta = f.metadata
    parts = [meta.get("help", "")]
    if meta.get("min") is not None and meta.get("max") is not None:
        parts.append(f"Range {meta['min']:g} to {meta['max']:g}.")
    parts.append(f"TOML key: {f.name}")
    return "\n".join(p for p in parts if p)


class SciSpinBox(QDoubleSpinBox):
    """A double spin box that shows 1e-04 as 1e-04, not 0.00."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDecimals(12)

    def textFromValue(self, value: float) -> str:
        return f"{value:g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text, pos):
        from PySide6.QtGui import QValidator

        try:
            float(text)
            return QValidator.Acceptable, text, pos
        except ValueError:
            return QValidator.Intermediate, text, pos

    def stepBy(self, steps: int) -> None:
        v = self.value()
        if v <= 0:
            self.setValue(max(self.minimum(), min(self.maximum(), v + steps * 0.1)))
        else:  # step in a log-ish way: 1e-4 -> 2e-4 -> ...
            self.setValue(max(self.minimum(), min(self.maximum(), v * (1.25 ** steps))))


class PathEdit(QWidget):
    changed = Signal()

    def __init__(self, kind: str = "dir", parent=None):
        super().__init__(parent)
        self.kind = kind
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.edit = QLineEdit()
        self.edit.textChanged.connect(self.changed)
        btn = QToolButton()
        btn.setText("…")
        btn.setToolTip("Browse")
        btn.clicked.connect(self._browse)
        lay.addWidget(self.edit, 1)
        lay.addWidget(btn)

    def _browse(self) -> None:
        if self.kind == "dir":
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.edit.text())
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a file", self.edit.text())
        if path:
            self.edit.setText(path)

    def text(self) -> str:
        return self.edit.text()

    def setText(self, text: str) -> None:
        self.edit.setText(text)


class ConfigForm(QWidget):
    """Editors for every user-facing TrainingConfig field, grouped, with advanced rows hidden by default."""

    changed = Signal(str)  # field name
    loaded = Signal()  # a whole config was put in (set_config)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.editors: dict[str, QWidget] = {}
        self._advanced_rows: list[tuple[QFormLayout, QWidget]] = []
        self._groups: dict[str, QGroupBox] = {}
        self._loading = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(8)
        by_group: dict[str, list[dataclasses.Field]] = {}
        for f in dataclasses.fields(cfgmod.TrainingConfig):
            if f.name in OWN_WIDGETS:
                continue
            group = f.metadata.get("group", "other")
            by_group.setdefault("data" if group == "model" else group, []).append(f)
        for key, title in GROUPS:
            box = QGroupBox(title)
            form = QFormLayout(box)
            form.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
            form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
            form.setHorizontalSpacing(10)
            form.setVerticalSpacing(6)
            for f in by_group.get(key, []):
                editor = self._make_editor(f)
                editor.setToolTip(tooltip_for(f))
                label = QLabel(label_for(f.name) + ":")
                label.setToolTip(tooltip_for(f))
                form.addRow(label, editor)
                self.editors[f.name] = editor
                if f.metadata.get("advanced"):
                    self._advanced_rows.append((form, editor))
            lay.addWidget(box)
            self._groups[key] = box
        self.advanced_box = QCheckBox("Show advanced settings")
        self.advanced_box.toggled.connect(self.set_advanced_visible)
        lay.insertWidget(0, self.advanced_box)
        lay.addStretch(1)
        self.set_config(cfgmod.TrainingConfig())
        self.set_advanced_visible(False)

    # ---- building
    def _make_editor(self, f: dataclasses.Field) -> QWidget:
        meta = f.metadata
        t = f.type if isinstance(f.type, str) else f.type.__name__
        if meta.get("choices") is not None:
            w = QComboBox()
            for c in meta["choices"]:
                w.addItem(c if c != "" else "(model default)", c)
            w.currentIndexChanged.connect(lambda _=0, n=f.name: self._emit(n))
        elif t == "bool":
            w = QCheckBox()
            w.toggled.connect(lambda _=False, n=f.name: self._emit(n))
        elif t == "int":
            w = QSpinBox()
            w.setRange(int(meta.get("min") or 0), int(min(meta.get("max") or INT_LIMIT, INT_LIMIT)))
            w.setAccelerated(True)
            w.setSuffix(SUFFIXES.get(f.name, ""))
            w.valueChanged.connect(lambda _=0, n=f.name: self._emit(n))
        elif t == "float":
            w = SciSpinBox()
            w.setRange(float(meta.get("min") or 0.0), float(meta.get("max") if meta.get("max") is not None else 1e9))
            w.valueChanged.connect(lambda _=0.0, n=f.name: self._emit(n))
        elif f.name in PATH_FIELDS:
            w = PathEdit(PATH_FIELDS[f.name])
            w.changed.connect(lambda n=f.name: self._emit(n))
        else:
            w = QLineEdit()
            if t == "list":
                w.setPlaceholderText("comma-separated")
            w.textChanged.connect(lambda _="", n=f.name: self._emit(n))
        w.setObjectName(f"field_{f.name}")
        return w

    def _emit(self, name: str) -> None:
        if not self._loading:
            self.changed.emit(name)

    def add_row(self, group: str, label: str, widget: QWidget) -> None:
        """An extra row (buttons that act on the group's fields) at the end of a group."""
        self._groups[group].layout().addRow(label, widget)

    def set_advanced_visible(self, on: bool) -> None:
        for form, editor in self._advanced_rows:
            form.setRowVisible(editor, on)
        if self.advanced_box.isChecked() != on:
            self.advanced_box.setChecked(on)

    # ---- values
    def value(self, name: str) -> Any:
        w = self.editors[name]
        f = cfgmod.FIELDS[name]
        t = f.type if isinstance(f.type, str) else f.type.__name__
        if isinstance(w, QComboBox):
            return w.currentData()
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QSpinBox):
            return int(w.value())
        if isinstance(w, QDoubleSpinBox):
            return float(w.value())
        text = w.text()
        if t == "list":
            return [s.strip() for s in text.split(",") if s.strip()]
        return text

    def set_value(self, name: str, value: Any) -> None:
        w = self.editors.get(name)
        if w is None:
            return
        if isinstance(w, QComboBox):
            i = w.findData(value)
            w.setCurrentIndex(max(i, 0))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QSpinBox):
            w.setValue(int(min(value, INT_LIMIT)))
        elif isinstance(w, QDoubleSpinBox):
            w.setValue(float(value))
        elif isinstance(value, list):
            w.setText(", ".join(value))
        else:
            w.setText(str(value))

    def values(self) -> dict[str, Any]:
        return {name: self.value(name) for name in self.editors}

    def set_config(self, cfg: cfgmod.TrainingConfig) -> None:
        self._loading = True
        try:
            for name in self.editors:
                self.set_value(name, getattr(cfg, name))
        finally:
            self._loading = False
        self.loaded.emit()

    def set_values(self, values: dict[str, Any]) -> None:
        self._loading = True
        try:
            for name, v in values.items():
                self.set_value(name, v)
        finally:
            self._loading = False
        for name in values:
            self.changed.emit(name)

    def highlight(self, key: str | None) -> None:
        for name, w in self.editors.items():
            w.setStyleSheet("border: 2px solid #d0342c; border-radius: 3px;" if name == key else "")
