"""The Training tab's head: base model, the GPU-memory preset, what was detected."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel

from lora_studio import config as cfgmod
from lora_studio.gui.widgets.model_picker import ModelPicker


class BaseModelPanel(QGroupBox):
    def __init__(self, parent=None):
        super().__init__("Base model and preset", parent)
        self.form = QFormLayout(self)
        self.form.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.model_picker = ModelPicker()
        self.form.addRow("Base model:", self.model_picker)
        self.model_label = QLabel("")
        self.model_label.setObjectName("hint")
        self.model_label.setWordWrap(True)
        self.form.addRow("", self.model_label)
        self.preset_combo = QComboBox()
        self.preset_combo.addItem("Custom (keep settings)", None)
        for size in cfgmod.PRESET_SIZES:
            self.preset_combo.addItem(f"{size} GB card", size)
        self.preset_combo.setToolTip("Settings that fit a GPU with this much memory, for the model's family; "
                                     "the detected GPU's preset is selected at start.")
        self.form.addRow("Preset:", self.preset_combo)
        self.gpu_label = QLabel("Detecting GPU…")
        self.gpu_label.setObjectName("hint")
        self.gpu_label.setWordWrap(True)
        self.form.addRow("", self.gpu_label)
