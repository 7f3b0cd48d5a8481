"""The Preview tab's result: a zoomable image with its tools, and the history strip of everything made."""

from __future__ import annotations

from PySide6.QtCore import QSize, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout

from lora_studio.gui.widgets.image_view import ImageView
from lora_studio.gui.widgets.open_folder import OpenFolderButton


class ResultPanel(QGroupBox):
    save_requested = Signal()

    def __init__(self, parent=None):
        super().__init__("Result", parent)
        lay = QVBoxLayout(self)
        tools = QHBoxLayout()
        self.view = ImageView(placeholder="Press Generate to make a preview")
        for text, tip, slot in (("Fit", "Fit the image to the view (double-click)", self.view.fit),
                                ("Zoom in", "Zoom in (mouse wheel)", lambda: self.view.zoom(1.25)),
                                ("Zoom out", "Zoom out (mouse wheel)", lambda: self.view.zoom(0.8)),
                                ("Save…", "Save the image as PNG", self.save_requested.emit)):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            tools.addWidget(b)
        self.open_folder = OpenFolderButton("Open folder")
        tools.addWidget(self.open_folder)
        tools.addStretch(1)
        self.info_label = QLabel("")
        self.info_label.setObjectName("hint")
        tools.addWidget(self.info_label)
        lay.addLayout(tools)
        lay.addWidget(self.view, 1)


class HistoryStrip(QListWidget):
    """Thumbnails of every image and grid made, newest last; picking one shows it again."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QListWidget.IconMode)
        self.setFlow(QListWidget.LeftToRight)
        self.setWrapping(False)
        self.setIconSize(QSize(80, 80))
        self.setFixedHeight(118)
        self.setMovement(QListWidget.Static)

    def add_entry(self, qimg, label: str, tooltip: str) -> None:
        item = QListWidgetItem(QIcon(QPixmap.fromImage(qimg)), label)
        item.setToolTip(tooltip)
        self.blockSignals(True)
        self.addItem(item)
        self.setCurrentItem(item)
        self.scrollToItem(item)
        self.blockSignals(False)
