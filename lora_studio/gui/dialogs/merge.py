"""Merge the enabled LoRAs with their weights into one LoRA file, or fuse them into a full model."""

from __future__ import annotations

import os

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
                               QPushButton, QRadioButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout)

from lora_studio.gui.widgets.wheel_guard import guard_wheel


class MergeDialog(QDialog):
    """Selected LoRAs with weights -> one merged LoRA file, or a fused full model folder."""

    def __init__(self, tab, loras: list[tuple[str, float]], model: str):
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
        guard_wheel(self)

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
