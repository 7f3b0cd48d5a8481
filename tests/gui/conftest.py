import time

import pytest
from PySide6.QtCore import QSettings, QTimer


class BlockProbe:
    """Ticks every 10 ms on the GUI thread; the largest gap between ticks is the longest the loop was blocked."""

    def __init__(self, interval_ms: int = 10):
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.max_gap = 0.0
        self.ticks = 0
        self._last = None

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            self.max_gap = max(self.max_gap, now - self._last)
        self._last = now
        self.ticks += 1

    def start(self):
        self._last = time.perf_counter()
        self.timer.start()
        return self

    def stop(self):
        self.timer.stop()
        self._tick()
        return self


@pytest.fixture
def probe():
    p = BlockProbe()
    yield p
    p.timer.stop()


@pytest.fixture
def make_window(qtbot, tmp_path):
    from lora_studio.gui.app import application

    application()
    made = []

    def make(**kw):
        from lora_studio.gui.main_window import MainWindow

        kw.setdefault("settings", QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
        kw.setdefault("first_run", False)
        kw.setdefault("probe_gpu", False)
        w = MainWindow(**kw)
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        return w

    yield make
    for w in made:
        if w.training_tab.is_running():
            w.training_tab.job.request_stop()
            w.training_tab.job.wait(60000)
        w.preview_tab.shutdown()
        w.dataset_tab.shutdown()
        if w.system_probe is not None:
            w.system_probe.wait(60000)


def make_images(folder, n, size=(24, 16), captions=True):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, ((i * 37) % 256, (i * 11) % 256, 128)).save(folder / f"img{i:04d}.png")
        if captions:
            (folder / f"img{i:04d}.txt").write_text(f"caption {i}", encoding="utf-8")
    return folder
