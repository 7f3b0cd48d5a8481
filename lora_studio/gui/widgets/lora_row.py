"""One LoRA in the Preview tab: enable box, name, a labelled weight slider (-2..2), remove button."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QSizePolicy, QToolButton, QWidget
from superqt import QLabeledDoubleSlider

from lora_studio.gui.widgets.elided_label import ElidedLabel

WEIGHT_RANGE = (-2.0, 2.0)


class LoraRow(QWidget):
    changed = Signal()  # weight settled or enable toggled: regenerate
    removed = Signal(object)

    def __init__(self, path: str, weight: float = 1.0, adapter_name: str = "lora", parent=None):
        super().__init__(parent)
        self.path = path
        self.adapter_name = adapter_name  # stable while the row lives: the engine keeps the adapter loaded
        lay = QHBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(6)
        self.enabled = QCheckBox()
        self.enabled.setChecked(True)
        self.enabled.setToolTip("Use this LoRA")
        self.name = ElidedLabel(self.display_name(path), mode=Qt.ElideRight)
        self.name.setToolTip(path)  # the whole path; the label shows the run's or file's name
        # An elided label ignores its size hint (so a long path cannot widen the window); here that let the
        # slider's stretch take the name's place and draw over it. Preferred: 110-170 px, the slider gets the rest.
        self.name.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred)
        self.name.setMinimumWidth(110)
        self.name.setMaximumWidth(170)
        # the slider and its editable number are one widget (superqt): no hand-synced spin box
        self.slider = QLabeledDoubleSlider(Qt.Horizontal)
        self.slider.setRange(*WEIGHT_RANGE)
        self.slider.setDecimals(2)
        self.slider.setSingleStep(0.05)
        self.slider.setPageStep(0.25)
        self.slider.setMinimumWidth(180)
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove this LoRA")
        remove.clicked.connect(lambda: self.removed.emit(self))
        for w in (self.enabled, self.name):
            lay.addWidget(w)
        lay.addWidget(self.slider, 1)
        lay.addWidget(remove)
        # A settled value regenerates: the slider's release, or a short pause after keys / typed numbers.
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(250)
        self._settle.timeout.connect(self.changed)
        self.slider.valueChanged.connect(self._moved)
        self.slider.sliderReleased.connect(self._released)
        self.enabled.toggled.connect(lambda _: self.changed.emit())
        self.set_weight(weight)

    @staticmethod
    def display_name(path: str) -> str:
        p = Path(path)
        if p.name in ("pytorch_lora_weights.safetensors",) and p.parent.name:
            return p.parent.name
        return p.stem

    def weight(self) -> float:
        return round(float(self.slider.value()), 4)

    def set_weight(self, w: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(float(w))
        self.slider.blockSignals(False)

    def _moved(self, _value: float) -> None:
        if not self.slider.isSliderDown():
            self._settle.start()

    def _released(self) -> None:
        self._settle.stop()
        self.changed.emit()
