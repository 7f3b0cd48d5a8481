"""Issue 7 in the app: an out-of-memory in the middle of a run shows the engine's advice in a dialog, keeps the
last good checkpoint, and the app goes on: Resume finishes the run."""

import torch

from lora_studio.core.training.checkpoint import list_checkpoints
from lora_studio.core.training.step import TrainingStep
from tests.gui.conftest import make_images
from tests.gui.test_training_tab import _setup


def test_injected_oom_shows_advice_and_resume_completes(qtbot, make_window, tmp_path, tiny_sd1, monkeypatch):
    data = make_images(tmp_path / "data", 4, size=(64, 64))
    out = tmp_path / "out"
    window = make_window()
    tab = _setup(window, tiny_sd1, data, out, steps=6, checkpointing_steps=2, train_batch_size=2)

    real = TrainingStep.__call__
    calls = {"n": 0}

    def oom_at_fifth_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return real(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", oom_at_fifth_step)
    with qtbot.waitSignal(tab.run_failed, timeout=120000) as failed:
        tab.start_btn.click()
    message, advice = failed.args
    assert "out of memory" in message
    assert "gradient_checkpointing" in advice and "train_batch_size" in advice
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=10000)
    box = tab.last_dialog
    assert box.isVisible() and "out of memory" in box.text() and "gradient_checkpointing" in box.informativeText()
    box.close()
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]

    monkeypatch.setattr(TrainingStep, "__call__", real)
    with qtbot.waitSignal(tab.run_finished, timeout=120000) as finished:
        tab.resume_btn.click()
    qtbot.waitUntil(lambda: not tab.is_running() and tab.start_btn.isEnabled(), timeout=30000)
    assert finished.args[0]["steps"] == 6
    assert (out / "pytorch_lora_weights.safetensors").is_file()
