"""The Preview tab on the real preview engine with a tiny random-init SD1 and two LoRAs, on CPU."""

import numpy as np
import pytest

from lora_studio.gui.widgets.image_view import to_qimage


def _pixels(qimage):
    qimage = qimage.convertToFormat(qimage.Format.Format_RGBA8888)
    return np.frombuffer(qimage.constBits(), np.uint8, qimage.sizeInBytes()).copy()


@pytest.mark.slow
def test_moving_a_slider_makes_a_new_image_without_reloading_the_base_model(qtbot, make_window, tiny_sd1,
                                                                           tiny_loras, probe):
    window = make_window(probe_gpu=True)
    qtbot.waitUntil(lambda: window.gpu_label.text().startswith(("CPU", "GPU")), timeout=120000)
    tab = window.preview_tab
    window.tabs.setCurrentWidget(tab)
    tab.model_picker.set_model(str(tiny_sd1))
    tab.steps.setValue(2)
    tab.prompt.setPlainText("a photo of sks toy")
    row_a = tab.add_lora(str(tiny_loras[0]), 1.0)
    tab.add_lora(str(tiny_loras[1]), 0.5)
    assert [r.adapter_name for r in tab.rows] == ["style_a", "style_b"]
    loaded = []
    tab.model_loaded.connect(lambda model, n: loaded.append(n))

    probe.start()
    with qtbot.waitSignal(tab.image_ready, timeout=120000) as first:
        tab.generate_btn.click()
    before = _pixels(tab.view.image())

    # the user drags the slider and lets go: a new image comes, and the base model was loaded once
    with qtbot.waitSignal(tab.image_ready, timeout=60000) as second:
        row_a.slider.setSliderDown(True)
        row_a.slider.setValue(-1.5)
        row_a.slider.setSliderDown(False)  # emits sliderReleased
    probe.stop()
    assert row_a.slider.value() == -1.5 and row_a.weight() == -1.5
    info = second.args[0]
    assert [w for _, w in info["loras"]] == [-1.5, 0.5]
    assert info["base_loads"] == 1 and loaded == [1] and tab.worker.loads == 1
    after = _pixels(tab.view.image())
    assert before.shape == after.shape and not np.array_equal(before, after)
    assert tab.history_list.count() == 2
    # how long the GUI loop was blocked: measured by bench/gui_block.py, not asserted (no wall-clock bars)

    # unticking a LoRA keeps it loaded at weight 0 (no reload) and regenerates
    with qtbot.waitSignal(tab.image_ready, timeout=60000) as third:
        tab.rows[1].enabled.setChecked(False)
    assert [w for _, w in third.args[0]["loras"]] == [-1.5, 0.0]
    assert tab.worker.engine.adapter_loads == 2 and tab.worker.engine.base_loads == 1
    assert first.args[0]["seed"] == third.args[0]["seed"]


def test_to_qimage_keeps_pixels():
    from PIL import Image

    img = Image.new("RGB", (3, 2), (10, 20, 30))
    q = to_qimage(img)
    assert (q.width(), q.height()) == (3, 2)
    assert q.pixelColor(2, 1).getRgb()[:3] == (10, 20, 30)
    for mode, value, rgba in (("L", 77, (77, 77, 77, 255)), ("RGBA", (1, 2, 3, 200), (1, 2, 3, 200))):
        q = to_qimage(Image.new(mode, (3, 2), value))
        del value  # the QImage owns its pixels
        assert q.pixelColor(0, 1).getRgb() == rgba


def test_merge_dialog_writes_one_lora_file(qtbot, make_window, tiny_loras, tmp_path):
    from safetensors import safe_open

    from lora_studio.gui.dialogs.merge import MergeDialog

    window = make_window()
    tab = window.preview_tab
    tab.add_lora(str(tiny_loras[0]), 1.0)
    tab.add_lora(str(tiny_loras[1]), -0.5)
    dlg = MergeDialog(tab, tab.active_loras(), "demo")
    qtbot.addWidget(dlg)
    assert dlg.loras() == [(str(tiny_loras[0]), 1.0), (str(tiny_loras[1]), -0.5)]
    out = tmp_path / "merged.safetensors"
    dlg.out.setText(str(out))
    with qtbot.waitSignal(tab.merged, timeout=60000) as done:
        dlg._ok()
    assert done.args[0] == str(out) and out.exists()
    with safe_open(str(out), "pt") as f:
        assert any("lora" in k for k in f.keys())


def test_status_says_when_the_preview_runs_in_low_memory(qtbot, make_window):
    """The worker reports the engine's mode with the load; a small card's slower moves are explained."""
    tab = make_window().preview_tab
    tab.worker.model_loaded.emit("big.safetensors", 1, False, False)
    qtbot.waitUntil(lambda: tab.status.text() == "Loaded big.safetensors.", timeout=5000)
    tab.worker.model_loaded.emit("big.safetensors", 2, True, False)
    qtbot.waitUntil(lambda: "Low-memory preview" in tab.status.text(), timeout=5000)
    assert "8 bits" not in tab.status.text()
    tab.worker.model_loaded.emit("xl.safetensors", 3, True, True)  # a 6-8 GB card with an SDXL model
    qtbot.waitUntil(lambda: "UNet stored in 8 bits" in tab.status.text(), timeout=5000)
    assert "text encoders in system memory" in tab.status.text() and tab.model_loads == 3


def test_each_lora_rows_name_is_shown_beside_its_slider_not_under_it(qtbot, make_window, tiny_loras):
    """In the app's window at its usual size the name keeps its room: the slider's stretch used to take it and
    draw over the name (README screenshot of 2026-12-07)."""
    window = make_window()
    window.resize(1400, 900)
    window.show()
    tab = window.preview_tab
    window.tabs.setCurrentWidget(tab)
    rows = [tab.add_lora(str(tiny_loras[0]), 1.0), tab.add_lora(str(tiny_loras[1]), 0.8)]
    qtbot.waitExposed(window)
    qtbot.waitUntil(lambda: all(r.isVisible() and r.slider.width() < 600 for r in rows), timeout=5000)  # laid out
    for row in rows:
        name, slider = row.name.geometry(), row.slider.geometry()
        assert name.width() >= 110
        assert name.right() < slider.left(), (name, slider)
        assert row.name.text() in ("style_a", "style_b")
