"""Live loss and learning-rate curves: growing numpy buffers, one PlotDataItem each, redrawn at ~10 Hz."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QVBoxLayout, QWidget

from lora_studio.gui import theme


class Buffer:
    """Append-only float buffer that doubles its capacity; ``view`` is the filled part."""

    def __init__(self, capacity: int = 1024):
        self._data = np.empty(capacity, dtype=np.float64)
        self.n = 0

    def append(self, value: float) -> None:
        if self.n == len(self._data):
            self._data = np.concatenate([self._data, np.empty_like(self._data)])
        self._data[self.n] = value
        self.n += 1

    def view(self) -> np.ndarray:
        return self._data[: self.n]

    def clear(self) -> None:
        self.n = 0

    def truncate(self, n: int) -> None:
        self.n = min(self.n, n)


class LossPlot(QWidget):
    """Loss (raw, smoothed, NaN marks) over a learning-rate curve sharing the step axis."""

    def __init__(self, parent=None, smoothing: float = 0.9, refresh_hz: float = 10.0):
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        self.smoothing = smoothing
        self.steps, self.loss, self.smooth, self.lr_steps, self.lr = Buffer(), Buffer(), Buffer(), Buffer(), Buffer()
        self.nan_steps: list[float] = []
        self._ema: float | None = None
        self._dirty = False
        self.redraws = 0

        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        self.loss_plot = self.view.addPlot(row=0, col=0)
        self.loss_plot.setLabel("left", "loss")
        self.loss_plot.showGrid(x=True, y=True, alpha=0.25)
        self.loss_plot.addLegend(offset=(-10, 10))
        self.raw_item = self.loss_plot.plot(name="loss", pen=pg.mkPen(theme.LOSS_RAW, width=1))
        self.smooth_item = self.loss_plot.plot(name="smoothed", pen=pg.mkPen(theme.LOSS_SMOOTH, width=2.2))
        self.nan_item = pg.ScatterPlotItem(name="NaN", symbol="x", size=11, pen=pg.mkPen(theme.NAN_BRUSH, width=2),
                                           brush=pg.mkBrush(theme.NAN_BRUSH))
        self.loss_plot.addItem(self.nan_item)  # named: the legend lists it
        self.lr_plot = self.view.addPlot(row=1, col=0)
        self.lr_plot.setLabel("left", "learning rate")
        self.lr_plot.setLabel("bottom", "step")
        self.lr_plot.showGrid(x=True, y=True, alpha=0.25)
        self.lr_plot.setXLink(self.loss_plot)
        self.lr_plot.setMaximumHeight(130)
        self.lr_item = self.lr_plot.plot(pen=pg.mkPen(theme.LR_PEN, width=2))
        for plot in (self.loss_plot, self.lr_plot):
            plot.getAxis("left").setWidth(58)
        for item in (self.raw_item, self.smooth_item, self.lr_item):
            item.setDownsampling(auto=True, method="peak")
            item.setClipToView(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.view)

        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / refresh_hz))
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    def clear(self) -> None:
        for b in (self.steps, self.loss, self.smooth, self.lr_steps, self.lr):
            b.clear()
        self.nan_steps.clear()
        self._ema = None
        self._dirty = True

    def add(self, step: int, loss: float | None, lr: float | None) -> None:
        if self.steps.n and step <= self.steps.view()[-1]:
            self._rewind(step)  # a run resumed from an earlier checkpoint: its curve continues from there
        if loss is not None:
            loss = float(loss)
            self.steps.append(step)
            self.loss.append(loss)
            if math.isfinite(loss):
                self._ema = loss if self._ema is None else self.smoothing * self._ema + (1 - self.smoothing) * loss
            else:
                self.nan_steps.append(step)
            self.smooth.append(self._ema if self._ema is not None else math.nan)
        if lr is not None:
            self.lr_steps.append(step)
            self.lr.append(float(lr))
        self._dirty = True

    def _rewind(self, step: int) -> None:
        keep = int(np.searchsorted(self.steps.view(), step, side="left"))
        for b in (self.steps, self.loss, self.smooth):
            b.truncate(keep)
        keep_lr = int(np.searchsorted(self.lr_steps.view(), step, side="left"))
        self.lr_steps.truncate(keep_lr)
        self.lr.truncate(keep_lr)
        self.nan_steps = [s for s in self.nan_steps if s < step]
        smooth = self.smooth.view()
        finite = smooth[np.isfinite(smooth)]
        self._ema = float(finite[-1]) if finite.size else None

    @property
    def points(self) -> int:
        return self.steps.n

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.redraws += 1
        x = self.steps.view()
        # connect="finite" leaves a gap at a NaN; the red cross marks it
        self.raw_item.setData(x, self.loss.view(), connect="finite")
        self.smooth_item.setData(x, self.smooth.view(), connect="finite")
        if self.nan_steps:
            finite = self.loss.view()[np.isfinite(self.loss.view())]
            y = float(finite.max()) if finite.size else 0.0
            self.nan_item.setData(self.nan_steps, [y] * len(self.nan_steps))
        else:
            self.nan_item.setData([], [])
        lr = self.lr.view()
        self.lr_item.setData(self.lr_steps.view(), lr)
        if lr.size:  # a constant schedule is a flat line: show it against zero, not centred in nothing
            top = float(np.nanmax(lr)) if np.isfinite(lr).any() else 1.0
            self.lr_plot.setYRange(0.0, top * 1.15 if top > 0 else 1.0, padding=0)
