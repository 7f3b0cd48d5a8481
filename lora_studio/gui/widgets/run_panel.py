"""Start / Stop / Resume, the progress bar, speed and ETA, and where the run writes."""

from __future__ import annotations

import math

from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout

from lora_studio.gui.widgets.open_folder import OpenFolderButton


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunPanel(QGroupBox):
    def __init__(self, parent=None):
        super().__init__("Run", parent)
        lay = QVBoxLayout(self)
        buttons = QHBoxLayout()
        self.start_btn = QPushButton("Start training")
        self.start_btn.setObjectName("primary")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stop after the current step and save a checkpoint you can resume.")
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip("Continue the run in the output folder from its last checkpoint.")
        self.open_output = OpenFolderButton()
        for b in (self.start_btn, self.stop_btn, self.resume_btn, self.open_output):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.status_label = QLabel("Ready.")
        self.status_label.setObjectName("big")
        buttons.addWidget(self.status_label)
        lay.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setFormat("not started")
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.speed_label = QLabel("– it/s · elapsed – · ETA –")
        self.speed_label.setObjectName("hint")
        lay.addWidget(self.speed_label)

    def set_running(self, running: bool, ready: bool = True) -> None:
        self.start_btn.setEnabled(ready and not running)
        self.resume_btn.setEnabled(ready and not running)
        self.stop_btn.setEnabled(running)
