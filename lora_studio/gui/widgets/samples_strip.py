"""A one-row strip of a run's validation samples, newest last."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QListWidget, QListWidgetItem

STEP_ROLE = Qt.UserRole + 1


class SamplesStrip(QListWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QListWidget.IconMode)
        self.setFlow(QListWidget.LeftToRight)
        self.setWrapping(False)
        self.setIconSize(QSize(96, 96))
        self.setFixedHeight(132)
        self.setMovement(QListWidget.Static)

    def add_sample(self, path: str, step: int, prompt: str = "") -> None:
        pix = QPixmap(path)
        if pix.isNull():
            return
        item = QListWidgetItem(QIcon(pix), f"step {step}")
        item.setToolTip(f"{prompt}\n{path}" if prompt else path)
        item.setData(Qt.UserRole, path)
        item.setData(STEP_ROLE, step)
        self.addItem(item)
        self.scrollToItem(item)

    def drop_from(self, step: int) -> None:
        """A resumed run restarts from an earlier checkpoint: its later samples are gone."""
        for i in reversed(range(self.count())):
            if self.item(i).data(STEP_ROLE) >= step:
                self.takeItem(i)
