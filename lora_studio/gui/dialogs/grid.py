"""Comparison grids: the dialog that sets one up, and the result window that saves it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QMessageBox, QPushButton, QRadioButton, QVBoxLayout)

from lora_studio.gui.widgets.image_view import ImageView
from lora_studio.gui.widgets.lora_row import LoraRow
from lora_studio.gui.widgets.open_folder import OpenFolderButton
from lora_studio.gui.widgets.wheel_guard import guard_wheel


def _numbers(text: str, cast):
    return [cast(t) for t in text.replace(";", ",").split(",") if t.strip()]


class GridDialog(QDialog):
    """Weight x seed for one LoRA, or checkpoint x seed for a run's saved checkpoints."""

    def __init__(self, tab):
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
        guard_wheel(self)

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


def grid_settings(info: dict) -> dict:
    """What made a grid, as plain JSON: saved beside its PNG so the grid can be made again."""
    keys = ("model", "prompt", "negative", "steps", "guidance", "width", "height", "scheduler", "adapter",
            "weights", "seeds", "checkpoints", "loras")
    return {k: info[k] for k in keys if k in info}


def save_grid(image, info: dict, path: str) -> tuple[str, str]:
    """The grid as PNG plus ``<name>.json`` with its settings; returns both absolute paths."""
    from lora_studio.core.io import write_text

    from lora_studio.gui.widgets.image_view import save_png

    png = save_png(image, path if path.lower().endswith(".png") else path + ".png")
    settings = str(Path(png).with_suffix(".json"))
    write_text(settings, json.dumps(grid_settings(info), indent=2) + "\n")
    return png, settings


class GridResult(QDialog):
    """The finished grid: rows and columns named, Save writes the PNG and the settings that made it."""

    def __init__(self, image, info: dict, parent=None):
        super().__init__(parent)
        self.image, self.info = image, info  # a QImage
        self.saved: tuple[str, str] | None = None
        self.setWindowTitle("Comparison grid")
        lay = QVBoxLayout(self)
        rows = "checkpoints" if info.get("checkpoints") else f"weights of {info.get('adapter')}"
        lay.addWidget(QLabel(f"Rows: {rows} · columns: seeds {info.get('seeds')}"))
        view = ImageView()
        view.set_image(image)
        lay.addWidget(view, 1)
        row = QHBoxLayout()
        save = QPushButton("Save grid…")
        save.setToolTip("Save the grid as PNG with a .json of the settings that made it")
        save.clicked.connect(self._pick_path)
        self.open_folder = OpenFolderButton("Open folder")
        self.saved_label = QLabel("")
        self.saved_label.setObjectName("hint")
        row.addWidget(save)
        row.addWidget(self.open_folder)
        row.addWidget(self.saved_label, 1)
        lay.addLayout(row)
        self.resize(900, 700)

    def _pick_path(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save grid", f"grid-{int(time.time())}.png", "PNG (*.png)")
        if path:
            self.save(path)

    def save(self, path: str) -> tuple[str, str] | None:
        try:
            self.saved = save_grid(self.image, self.info, path)
        except OSError as exc:
            QMessageBox.warning(self, "Save grid", f"Could not save the grid: {exc}")
            return None
        self.open_folder.set_folder(os.path.dirname(self.saved[0]))
        self.saved_label.setText(f"Saved {self.saved[0]} and {os.path.basename(self.saved[1])}")
        return self.saved
