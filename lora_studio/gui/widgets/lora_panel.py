"""The Preview tab's LoRA list: one LoraRow per adapter, and the buttons that act on them."""

from __future__ import annotations

from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout


class LoraPanel(QGroupBox):
    def __init__(self, parent=None):
        super().__init__("LoRAs", parent)
        self.lay = QVBoxLayout(self)
        self.lay.setSpacing(2)
        self.empty_label = QLabel("No LoRA yet: add a trained adapter (.safetensors) to blend it in.")
        self.empty_label.setObjectName("hint")
        self.empty_label.setWordWrap(True)
        self.lay.addWidget(self.empty_label)
        buttons = QHBoxLayout()
        self.add_btn = QPushButton("Add LoRA…")
        self.grid_btn = QPushButton("Comparison grid…")
        self.merge_btn = QPushButton("Merge…")
        buttons.addWidget(self.add_btn)
        buttons.addStretch(1)
        buttons.addWidget(self.grid_btn)
        buttons.addWidget(self.merge_btn)
        self.lay.addLayout(buttons)

    def show_rows(self, rows: list) -> None:
        """Rows sit between the empty-list hint and the buttons, in order."""
        for i, row in enumerate(rows):
            if self.lay.indexOf(row) != i + 1:
                self.lay.insertWidget(i + 1, row)
        self.empty_label.setVisible(not rows)
