"""The Training tab drives the real engine on a tiny random-init SD1 pipeline (the demo architecture), on CPU."""

import math

import pytest
from PySide6.QtCore import Qt

from lora_studio.core import events as ev
from tests.gui.conftest import make_images


def _setup(window, model, data, out, steps, **extra):
    tab = window.training_tab
    tab.model_picker.set_model(str(model))
    values = dict(train_data_dir=str(data), output_dir=str(out), resolution=64, max_train_steps=steps,
                  checkpointing_steps=1000, rank=4, learning_rate=1e-3, report_to="none", validation_prompt="",
                  sample_steps=3, seed=7)
    values.update(extra)
    tab.form.set_values(values)
    return tab


def _wait_ready(qtbot, window):
    # the app warms torch/diffusers imports on its start-up thread; a run starts after that, as for a user
    qtbot.waitUntil(lambda: window.gpu_label.text().startswith(("CPU", "GPU")), timeout=120000)


@pytest.mark.slow
def test_training_run_from_the_tab_feeds_the_plot_and_finishes(qtbot, make_window, tmp_path, tiny_sd1, probe):
    data = make_images(tmp_path / "data", 4, size=(64, 64))
    window = make_window(probe_gpu=True)
    _wait_ready(qtbot, window)
    tab = _setup(window, tiny_sd1, data, tmp_path / "out", steps=8, validation_prompt="a photo",
                 validation_steps=4, num_validation_images=1)
    seen = []
    tab.event_received.connect(seen.append)
    probe.start()
    with qtbot.waitSignal(tab.run_finished, timeout=180000) as finished:
        qtbot.mouseClick(tab.start_btn, Qt.LeftButton)
        assert tab.is_running() and not tab.start_btn.isEnabled() and tab.stop_btn.isEnabled()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=10000)
    probe.stop()
    result = finished.args[0]
    assert not result["stopped"] and result["steps"] == 8
    assert isinstance(seen[-1], ev.Finished)
    assert tab.plot.points == 8 and tab.plot.redraws >= 1
    x, y = tab.plot.raw_item.getData()
    assert len(x) == 8 and all(math.isfinite(v) for v in y)
    assert tab.progress.value() == 8 and tab.start_btn.isEnabled()
    assert tab.samples.count() >= 1  # validation samples appear
    # each part of the run shows its time in the log (Phase events: load ... train, save, samples)
    phases = [e.name for e in seen if isinstance(e, ev.Phase)]
    assert phases == ["load", "cache", "setup", "train", "save", "samples"]
    log = tab.log.toPlainText()
    assert all(f"{name}: " in log for name in phases)
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").exists()
    assert (tmp_path / "out" / "events.jsonl").exists()
    # the finished adapter is offered in the Preview tab
    assert any(r.path.endswith("pytorch_lora_weights.safetensors") for r in window.preview_tab.rows)
    # how long the GUI loop was blocked: measured by bench/gui_block.py, not asserted (no wall-clock bars)

    # a finished run reopens with its curve
    other = make_window()
    other.open_run(str(tmp_path / "out"))
    assert other.training_tab.plot.points == 8


@pytest.mark.slow
def test_stop_leaves_a_run_that_resume_completes(qtbot, make_window, tmp_path, tiny_sd1):
    data = make_images(tmp_path / "data", 4, size=(64, 64))
    window = make_window(probe_gpu=True)
    _wait_ready(qtbot, window)
    tab = _setup(window, tiny_sd1, data, tmp_path / "out", steps=400)
    steps = []
    tab.event_received.connect(lambda e: isinstance(e, ev.Progress) and e.phase == "train" and steps.append(e.step))
    with qtbot.waitSignal(tab.run_finished, timeout=180000) as stopped:
        tab.start_btn.click()
        qtbot.waitUntil(lambda: len(steps) >= 3, timeout=120000)
        tab.stop_btn.click()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=30000)
    first = stopped.args[0]
    assert first["stopped"] and 3 <= first["steps"] < 400
    assert list((tmp_path / "out" / "checkpoints").iterdir())

    tab.form.set_values({"max_train_steps": first["steps"] + 3})
    steps.clear()
    with qtbot.waitSignal(tab.run_finished, timeout=180000) as resumed:
        tab.resume_btn.click()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=30000)
    second = resumed.args[0]
    assert not second["stopped"] and second["steps"] == first["steps"] + 3
    assert steps[0] == first["steps"] + 1  # continued, not restarted
    assert tab.plot.points == first["steps"] + 3  # one curve across the stop

    # closing the window during a run asks, then stops cleanly at a resumable checkpoint and closes
    asked = []
    window.confirm_close_during_run = lambda: asked.append(1) or True
    tab.form.set_values({"max_train_steps": second["steps"] + 400})
    steps.clear()
    tab.resume_btn.click()
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=120000)
    window.close()
    assert asked == [1] and window.isVisible()  # still open while the run saves
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=60000)
    assert tab.last_result["stopped"] and tab.last_result["steps"] >= steps[1]
    assert (tmp_path / "out" / "checkpoints" / f"checkpoint-{tab.last_result['steps']}").is_dir()


def test_form_is_built_from_config_metadata_and_rejects_bad_values(qtbot, make_window):
    from lora_studio import config as cfgmod

    window = make_window()
    form = window.training_tab.form
    lr = form.editors["learning_rate"]
    assert cfgmod.field_help("learning_rate") in lr.toolTip()
    assert set(form.editors) >= {"rank", "train_batch_size", "mixed_precision", "gradient_checkpointing"}
    assert not form.editors["adam_beta1"].isVisibleTo(form)  # advanced rows collapsed
    form.advanced_box.setChecked(True)
    assert form.editors["adam_beta1"].isVisibleTo(form)
    window.set_gpu({"name": "RTX Test", "total": 12 * 1024**3, "cuda": True})
    assert window.training_tab.preset_combo.currentData() == 12
    assert form.value("train_batch_size") == cfgmod.PRESETS["sd1"][12]["train_batch_size"]
    form.set_values({"mode": "dreambooth", "instance_prompt": ""})
    assert window.training_tab.start() is False  # ConfigError -> dialog, no run
    assert "instance_prompt" in window.training_tab.last_dialog.text()
    window.training_tab.last_dialog.close()


def test_loss_plot_keeps_nan_visible_and_rewinds_on_resume(qtbot):
    from lora_studio.gui.widgets.loss_plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    for step, loss in enumerate([1.0, 0.8, float("nan"), 0.6, 0.5], start=1):
        plot.add(step, loss, 1e-4)
    plot.redraw()
    assert plot.nan_steps == [3]
    assert len(plot.nan_item.data) == 1  # the NaN gets a red cross
    for step in (4, 5, 6):  # resumed from the step-3 checkpoint
        plot.add(step, 0.4, 1e-4)
    assert list(plot.steps.view()) == [1, 2, 3, 4, 5, 6]
    assert plot.loss.view()[-1] == 0.4


def test_engine_failure_shows_its_advice_in_a_dialog(qtbot, make_window, tmp_path, tiny_sd1):
    empty = tmp_path / "empty"
    empty.mkdir()
    window = make_window()
    tab = _setup(window, tiny_sd1, empty, tmp_path / "out", steps=4)
    with qtbot.waitSignal(tab.run_failed, timeout=60000) as failed:
        tab.start_btn.click()
    message, advice = failed.args
    assert message and advice
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=10000)
    box = tab.last_dialog
    assert box.isVisible() and box.text() == message and advice in box.informativeText()
    assert tab.status_label.text() == "Failed."
    box.close()


def test_run_config_saves_and_reopens_and_recent_items_persist(qtbot, make_window, tmp_path):
    window = make_window()
    window.training_tab.form.set_values({"rank": 24, "learning_rate": 3e-4, "mixed_precision": "bf16"})
    window.training_tab.model_picker.set_model("demo-xl")
    path = tmp_path / "run.toml"
    assert window.save_config(str(path))
    other = make_window()
    assert other.open_config(str(path))
    cfg = other.training_tab.config()
    assert (cfg.rank, cfg.learning_rate, cfg.mixed_precision, cfg.pretrained_model_name_or_path) == \
        (24, 3e-4, "bf16", "demo-xl")
    assert other.recent()[0] == f"config:{path}"
    labels = [a.text() for a in other.recent_menu.actions()]
    assert labels and str(path) in labels[0]


def test_memory_meter_shows_in_use_peak_and_total(qtbot):
    from lora_studio.gui.widgets.memory_meter import GIB, MemoryMeter

    meter = MemoryMeter()
    qtbot.addWidget(meter)
    meter.update_memory(3 * GIB, 5 * GIB, 24 * GIB)
    meter.update_memory(2 * GIB, 4 * GIB, 24 * GIB)  # the peak never goes down
    assert meter.label.text() == "In use 2.0 GiB · peak 5.0 GiB · total 24.0 GiB"
    assert meter.bar.value() == round(1000 * 2 / 24)
