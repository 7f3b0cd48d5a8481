"""At start-up the app checks that torch sees the device the installer chose, and says what to do if not."""

import json


def test_installer_choice_that_torch_cannot_honour_is_reported(qtbot, make_window, tmp_path, monkeypatch):
    record = tmp_path / "install.json"
    record.write_text(json.dumps({"build": "cu126", "device": "cuda", "gpus": [{"name": "NVIDIA RTX 4090"}]}))
    monkeypatch.setenv("LORA_STUDIO_INSTALL_RECORD", str(record))
    from lora_studio.core import system

    monkeypatch.setattr(system, "find_install_record", lambda: record)
    window = make_window(probe_gpu=True)
    qtbot.waitUntil(lambda: window.gpu_label.text().startswith(("CPU", "GPU")), timeout=120000)
    assert "setup problem" in window.gpu_label.text()
    assert "RTX 4090" in window.gpu_label.toolTip() and "CPU build" in window.gpu_label.toolTip()
