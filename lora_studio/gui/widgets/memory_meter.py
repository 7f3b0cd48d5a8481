"""GPU memory: a bar for memory in use, a line of text for peak and total."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

GIB = 1024**3


def fmt_gib(n: int | None) -> str:
    return "–" if n is None else f"{n / GIB:.1f} GiB"


class MemoryMeter(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.label = QLabel()
        self.label.setObjectName("hint")
        lay.addWidget(self.bar)
        lay.addWidget(self.label)
        self.peak = 0
        self.set_cpu()

    def set_cpu(self, name: str = "CPU") -> None:
        self.bar.setValue(0)
        self.bar.setFormat(f"{name}: no GPU memory to track")
        self.label.setText("In use – · peak – · total –")

    def update_memory(self, used: int | None, peak: int | None, total: int | None) -> None:
        if used is None or not total:
            return
        self.peak = max(self.peak, peak or used)
        self.bar.setValue(int(1000 * used / total))
        self.bar.setFormat(f"{fmt_gib(used)} of {fmt_gib(total)} ({100 * used / total:.0f}%)")
        self.label.setText(f"In use {fmt_gib(used)} · peak {fmt_gib(self.peak)} · total {fmt_gib(total)}")
