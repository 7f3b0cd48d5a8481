import gc
import json
import os
import sys
import threading
import time
import traceback

import pytest
from PySide6.QtCore import QSettings, QTimer


class BlockProbe:
    """Ticks every 10 ms on the GUI thread; the largest gap between ticks is the longest the loop was blocked.

    A watchdog thread records where the GUI thread was when it missed ticks for over 150 ms, so a failure
    says what blocked it.
    """

    def __init__(self, interval_ms: int = 10):
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.max_gap = 0.0
        self.ticks = 0
        self._last = None
        self.stalls: list[str] = []
        self._gui_thread = threading.get_ident()
        self._watch = threading.Event()

    def _watchdog(self):
        reported = None
        while not self._watch.wait(0.05):
            last = self._last
            if last is not None and time.perf_counter() - last > 0.15 and reported != last:
                reported = last
                frame = sys._current_frames().get(self._gui_thread)
                if frame is not None:
                    self.stalls.append("".join(traceback.format_stack(frame)[-8:]))

    def report(self) -> str:
        return f"GUI blocked for {self.max_gap * 1000:.0f} ms; stuck in:\n" + "\n---\n".join(self.stalls[:3])

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            self.max_gap = max(self.max_gap, now - self._last)
        self._last = now
        self.ticks += 1

    def start(self):
        # What the suite left on the heap is not the app's. Once, late in the suite on a 2-core machine, the GUI
        # thread sat 449 ms inside Qt's event loop with no app code on its stack; a full garbage collection of
        # that heap, run by whichever thread allocates, holds every thread and is the likely cause.
        gc.collect()
        gc.freeze()
        self._last = time.perf_counter()
        self.timer.start()
        self._watch.clear()
        threading.Thread(target=self._watchdog, daemon=True).start()
        return self

    def stop(self):
        self.timer.stop()
        self._tick()
        self._watch.set()
        gc.unfreeze()
        return self


@pytest.fixture
def probe(request):
    """How long the GUI loop was blocked; tests do not assert it (a busy machine stretches any bar):
    bench/gui_block.py runs these tests with LORA_STUDIO_GUI_GAPS=FILE and reads what they record there."""
    p = BlockProbe()
    yield p
    p.timer.stop()
    p._watch.set()
    gc.unfreeze()
    if os.environ.get("LORA_STUDIO_GUI_GAPS"):
        with open(os.environ["LORA_STUDIO_GUI_GAPS"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"test": request.node.nodeid, "max_gap_ms": round(p.max_gap * 1000, 1),
                                 "ticks": p.ticks, "stalls": p.stalls[:3]}) + "\n")


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


@pytest.fixture(scope="session")
def tiny_sd1(tmp_path_factory):
    """The demo architecture (SD1 in miniature), random init, saved as a diffusers folder."""
    from lora_studio.core.demo.build import build_pipeline

    path = tmp_path_factory.mktemp("gui-models") / "sd1"
    build_pipeline("sd1", seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_loras(tiny_sd1, tmp_path_factory):
    """Two LoRA files for the tiny SD1 with random (not zero) up-weights, so each visibly changes the image."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder = tmp_path_factory.mktemp("gui-loras")
    paths = []
    for i, name in enumerate(("style_a", "style_b")):
        pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1)
        torch.manual_seed(100 + i)
        pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                         target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        out = folder / name
        StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(pipe.unet))
        paths.append(out / "pytorch_lora_weights.safetensors")
    return paths
