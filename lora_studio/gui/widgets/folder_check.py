"""The folder check: every problem the dataset layer found, errors in red, warnings in yellow."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGroupBox, QListWidget, QListWidgetItem, QVBoxLayout

MAX_SHOWN = 500


class FolderCheckPanel(QGroupBox):
    def __init__(self, parent=None):
        super().__init__("Folder check", parent)
        lay = QVBoxLayout(self)
        self.problem_list = QListWidget()
        self.problem_list.setWordWrap(True)
        lay.addWidget(self.problem_list)

    def show_problems(self, problems) -> None:
        self.problem_list.clear()
        if not problems:
            self.problem_list.addItem("No problems found.")
        for p in problems[:MAX_SHOWN]:
            item = QListWidgetItem(f"{p.file or '.'}: {p.message}")
            item.setToolTip(p.advice)
            item.setForeground(Qt.red if p.severity == "error" else Qt.darkYellow)
            self.problem_list.addItem(item)
