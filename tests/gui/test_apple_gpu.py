"""On a Mac the app names the Apple GPU (MPS), never "CUDA", and the probe says which backend it found."""

import torch


def test_the_probe_reports_mps_as_mps(monkeypatch):
    from lora_studio.gui.workers import gpu_info

    # This machine has no Apple GPU: stand torch's availability answers in for a Mac's.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * 2**30, raising=False)
    info = gpu_info()
    assert info["backend"] == "mps" and info["cuda"] is False


def test_the_status_bar_names_the_apple_gpu(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from lora_studio.gui.main_window import MainWindow

    window = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat), first_run=False,
                        probe_gpu=False)
    qtbot.addWidget(window)
    window.set_gpu({"name": "Apple MPS", "total": 16 * 2**30, "cuda": False, "backend": "mps"})
    assert "MPS" in window.gpu_label.text() and "CUDA" not in window.gpu_label.text()
    assert "MPS" in window.training_tab.gpu_label.text() and "No CUDA GPU" not in window.training_tab.gpu_label.text()
