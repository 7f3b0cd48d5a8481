"""A roomy multi-line caption editor (Ctrl+Enter saves)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout


class CaptionEditor(QDialog):
    def __init__(self, name: str, text: str, pixmap: QPixmap | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Caption — {name}")
        self.resize(640, 360)
        lay = QHBoxLayout(self)
        if pixmap is not None and not pixmap.isNull():
            img = QLabel()
            img.setPixmap(pixmap.scaled(240, 240, Qt.KeepAspectRatio, Qt.SmoothTransformation))
            img.setAlignment(Qt.AlignTop)
            lay.addWidget(img)
        right = QVBoxLayout()
        self.edit = QPlainTextEdit(text)
        right.addWidget(self.edit, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        right.addWidget(buttons)
        lay.addLayout(right, 1)
        QShortcut(QKeySequence("Ctrl+Return"), self, activated=self.accept)

    def text(self) -> str:
        return self.edit.toPlainText()
