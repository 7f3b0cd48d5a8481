"""One LoRA in the Preview tab: enable box, name, weight slider and spin box (-2..2), remove button."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSlider, QToolButton, QWidget

SLIDER_SCALE = 100  # slider ticks per unit weight


class LoraRow(QWidget):
    """One LoRA: enable box, name, weight slider and spin box (-2..2), remove button."""

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
        self.name = QLabel(self.display_name(path))
        self.name.setToolTip(path)
        self.name.setMinimumWidth(110)
        self.name.setMaximumWidth(170)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(-2 * SLIDER_SCALE, 2 * SLIDER_SCALE)
        self.slider.setSingleStep(5)
        self.slider.setPageStep(25)
        self.slider.setTickInterval(SLIDER_SCALE // 2)
        self.slider.setTickPosition(QSlider.TicksBelow)
        self.slider.setMinimumWidth(120)
        self.spin = QDoubleSpinBox()
        self.spin.setRange(-2.0, 2.0)
        self.spin.setSingleStep(0.05)
        self.spin.setDecimals(2)
        self.spin.setFixedWidth(72)
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove this LoRA")
        remove.clicked.connect(lambda: self.removed.emit(self))
        for w in (self.enabled, self.name):
            lay.addWidget(w)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.spin)
        lay.addWidget(remove)
        # A settled value regenerates: the slider's release, or a short pause after keys / spin box edits.
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(250)
        self._settle.timeout.connect(self.changed)
        self.slider.valueChanged.connect(self._from_slider)
        self.slider.sliderReleased.connect(self._released)
        self.spin.valueChanged.connect(self._from_spin)
        self.enabled.toggled.connect(lambda _: self.changed.emit())
        self.set_weight(weight)

    @staticmethod
    def display_name(path: str) -> str:
        p = Path(path)
        if p.name in ("pytorch_lora_weights.safetensors",) and p.parent.name:
            return p.parent.name
        return p.stem

    def weight(self) -> float:
        return round(self.spin.value(), 4)

    def set_weight(self, w: float) -> None:
        self.spin.blockSignals(True)
        self.slider.blockSignals(True)
        self.spin.setValue(w)
        self.slider.setValue(round(w * SLIDER_SCALE))
        self.spin.blockSignals(False)
        self.slider.blockSignals(False)

    def _from_slider(self, v: int) -> None:
        self.spin.blockSignals(True)
        self.spin.setValue(v / SLIDER_SCALE)
        self.spin.blockSignals(False)
        if not self.slider.isSliderDown():
            self._settle.start()

    def _released(self) -> None:
        self._settle.stop()
        self.changed.emit()

    def _from_spin(self, v: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(v * SLIDER_SCALE))
        self.slider.blockSignals(False)
        self._settle.start()
