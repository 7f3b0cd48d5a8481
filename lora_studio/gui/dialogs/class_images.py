"""Grid of generated DreamBooth class images; delete the ones that came out wrong."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPushButton, QVBoxLayout)


class ClassImagesReview(QDialog):
    def __init__(self, folder: str, parent=None):
        super().__init__(parent)
        self.folder = Path(folder)
        self.setWindowTitle(f"Review class images — {self.folder}")
        self.resize(760, 560)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Select images that do not show the class well, then delete them. "
                             "Missing ones are generated again before training."))
        self.grid = QListWidget()
        self.grid.setViewMode(QListWidget.IconMode)
        self.grid.setIconSize(QSize(128, 128))
        self.grid.setResizeMode(QListWidget.Adjust)
        self.grid.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.grid.setMovement(QListWidget.Static)
        self.grid.setSpacing(6)
        lay.addWidget(self.grid, 1)
        row = QHBoxLayout()
        self.count = QLabel()
        delete = QPushButton("Delete selected")
        delete.setObjectName("danger")
        delete.clicked.connect(self.delete_selected)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        row.addWidget(self.count)
        row.addStretch(1)
        row.addWidget(delete)
        row.addWidget(close)
        lay.addLayout(row)
        self.reload()

    def reload(self) -> None:
        from lora_studio.core.dataset import scan

        self.grid.clear()
        paths = scan(self.folder) if self.folder.is_dir() else []
        for p in paths:
            item = QListWidgetItem(QIcon(QPixmap(str(p))), p.name)
            item.setData(Qt.UserRole, str(p))
            self.grid.addItem(item)
        self.count.setText(f"{len(paths)} class images")

    def delete_selected(self) -> int:
        items = self.grid.selectedItems()
        for item in items:
            try:
                os.remove(item.data(Qt.UserRole))
            except OSError:
                pass
        self.reload()
        return len(items)
