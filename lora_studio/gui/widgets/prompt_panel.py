"""Prompt and sampling settings of a preview: prompt, negative, seed, steps, guidance, size, scheduler."""

from __future__ import annotations

import random

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QPlainTextEdit, QSpinBox, QToolButton)

# the preview engine accepts these labels (core.inference.engine.SCHEDULERS)
SCHEDULERS = ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC"]
DEFAULTS = dict(prompt="a photo of sks toy on a wooden table", negative="", seed=42, steps=12, guidance=7.5,
                width=0, height=0, scheduler="Euler")


class PromptPanel(QGroupBox):
    def __init__(self, parent=None):
        super().__init__("Prompt and sampling", parent)
        form = QFormLayout(self)
        form.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.prompt = QPlainTextEdit()
        self.prompt.setFixedHeight(58)
        self.negative = QLineEdit()
        self.negative.setPlaceholderText("what to avoid, e.g. blurry, low quality")
        seed_row = QHBoxLayout()
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        dice = QToolButton()
        dice.setText("⚄")
        dice.setToolTip("Random seed")
        dice.clicked.connect(lambda: self.seed.setValue(random.randrange(2**31 - 1)))
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(dice)
        self.steps = QSpinBox()
        self.steps.setRange(1, 150)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 30.0)
        self.guidance.setSingleStep(0.5)
        size_row = QHBoxLayout()
        self.width_spin = QSpinBox()
        self.height_spin = QSpinBox()
        for s in (self.width_spin, self.height_spin):
            s.setRange(0, 4096)
            s.setSingleStep(64)
            s.setSpecialValueText("model's own")  # 0: the base model's native size
        size_row.addWidget(self.width_spin, 1)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_spin, 1)
        self.scheduler = QComboBox()
        self.scheduler.addItems(SCHEDULERS)
        for label, w in (("Prompt:", self.prompt), ("Negative:", self.negative), ("Seed:", seed_row),
                         ("Steps:", self.steps), ("Guidance:", self.guidance), ("Size:", size_row),
                         ("Scheduler:", self.scheduler)):
            form.addRow(label, w)
        self.set_params(DEFAULTS)

    def params(self) -> dict:
        return dict(prompt=self.prompt.toPlainText().strip(), negative=self.negative.text().strip(),
                    seed=self.seed.value(), steps=self.steps.value(), guidance=self.guidance.value(),
                    width=self.width_spin.value(), height=self.height_spin.value(),
                    scheduler=self.scheduler.currentText())

    def set_params(self, params: dict) -> None:
        """Any subset of params(); unknown keys and a scheduler this version lacks are ignored."""
        p = {k: v for k, v in params.items() if k in DEFAULTS}
        if "prompt" in p:
            self.prompt.setPlainText(str(p["prompt"]))
        if "negative" in p:
            self.negative.setText(str(p["negative"]))
        for key, box in (("seed", self.seed), ("steps", self.steps), ("width", self.width_spin),
                         ("height", self.height_spin)):
            if key in p:
                box.setValue(int(p[key]))
        if "guidance" in p:
            self.guidance.setValue(float(p["guidance"]))
        if p.get("scheduler") in SCHEDULERS:
            self.scheduler.setCurrentText(p["scheduler"])
