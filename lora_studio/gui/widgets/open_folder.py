"""A button that opens a folder in the desktop's file manager; its tooltip shows the absolute path."""

from __future__ import annotations

import os

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QPushButton


class OpenFolderButton(QPushButton):
    def __init__(self, text: str = "Open output folder", parent=None):
        super().__init__(text, parent)
        self.folder = ""
        self.opened: list[str] = []  # what was handed to the desktop, for the status line and tests
        self.clicked.connect(self.open_folder)
        self.set_folder("")

    def set_folder(self, folder: str) -> None:
        self.folder = os.path.abspath(os.path.expanduser(folder)) if folder else ""
        self.setToolTip(self.folder or "Nothing written yet.")
        self.setEnabled(bool(self.folder))

    def open_folder(self) -> bool:
        folder = self.folder if os.path.isdir(self.folder) else os.path.dirname(self.folder)
        if not folder or not os.path.isdir(folder):
            self.setToolTip(f"{self.folder} does not exist yet.")
            return False
        self.opened.append(folder)
        return QDesktopServices.openUrl(QUrl.fromLocalFile(folder))
