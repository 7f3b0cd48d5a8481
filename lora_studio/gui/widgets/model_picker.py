"""Base model picker: a diffusers folder, a single-file checkpoint, or a built-in demo model."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QWidget

DEMO_MODELS = ["demo", "demo-xl"]


class ModelPicker(QWidget):
    changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.addItems(DEMO_MODELS)
        self.combo.setToolTip("A diffusers model folder, a .safetensors/.ckpt checkpoint, or a built-in demo model.")
        self.combo.setMinimumContentsLength(18)
        self.combo.currentTextChanged.connect(self.changed)
        folder = QPushButton("Folder…")
        folder.clicked.connect(self._pick_folder)
        file = QPushButton("File…")
        file.clicked.connect(self._pick_file)
        lay.addWidget(self.combo, 1)
        lay.addWidget(folder)
        lay.addWidget(file)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder")
        if path:
            self.set_model(path)

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a checkpoint", "",
                                              "Checkpoints (*.safetensors *.ckpt);;All files (*)")
        if path:
            self.set_model(path)

    def model(self) -> str:
        return self.combo.currentText().strip()

    def set_model(self, model: str) -> None:
        if self.combo.findText(model) < 0:
            self.combo.addItem(model)
        self.combo.setCurrentText(model)
