"""What a new user met in the app's first hour (imports racing, wheel edits, sizes, settings, counters, grids)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, QPoint, QPointF, QSettings, Qt, Slot
from PySide6.QtGui import QDesktopServices, QWheelEvent
from PySide6.QtWidgets import QAbstractSlider, QAbstractSpinBox, QApplication, QComboBox, QScrollBar

from lora_studio import config as cfgmod
from lora_studio.gui.models.caption_model import COL_CAPTION
from lora_studio.paths import resource
from tests.gui.conftest import make_images

REPO = Path(__file__).resolve().parents[2]

# A job started while the start-up probe is still importing torch/transformers/diffusers. Run in a fresh
# interpreter: in this one the libraries are long imported and nothing could race.
RACE = textwrap.dedent("""
    import os, sys
    from PySide6.QtCore import QSettings
    from lora_studio.gui.app import application, wait_until
    app = application()
    from lora_studio.gui.main_window import MainWindow
    w = MainWindow(settings=QSettings(sys.argv[1], QSettings.IniFormat), first_run=False, probe_gpu=True)
    if hasattr(w.preview_tab, "ready"):
        print("READY_AT_START", w.preview_tab.generate_btn.isEnabled(), w.training_tab.start_btn.isEnabled(),
              w.training_tab.class_images.gen_btn.isEnabled(), w.statusBar().currentMessage())
    tab = w.preview_tab
    errors = []
    tab.worker.error.connect(lambda m, a: errors.append(m))
    tab.model_picker.set_model("demo")
    tab.steps.setValue(2)
    tab.generate()  # at once, as a user pressing Generate right after launch
    wait_until(lambda: tab.images_made or errors, 300, app)
    wait_until(lambda: w.system_probe.isFinished(), 300, app)
    print("IMAGES", tab.images_made, "ERRORS", errors)
    app.processEvents()
    print("READY_AFTER", tab.generate_btn.isEnabled(), w.training_tab.start_btn.isEnabled(),
          w.training_tab.class_images.gen_btn.isEnabled())
    tab.shutdown()
""")


def test_generate_pressed_while_the_probe_imports_works_and_buttons_wait(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", RACE, str(tmp_path / "s.ini")], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    lines = {line.split(" ", 1)[0]: line for line in out.stdout.splitlines()}
    assert "IMAGES" in lines, out.stdout + out.stderr
    assert lines["IMAGES"] == "IMAGES 1 ERRORS []", out.stdout + out.stderr[-3000:]
    # the job buttons are off (and say why) until the imports are done, then on
    assert lines["READY_AT_START"].startswith("READY_AT_START False False False Loading the training libraries")
    assert lines["READY_AFTER"] == "READY_AFTER True True True"


def _wheel(widget, notches=-3):
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, 120 * notches),
                        Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def _value(w):
    return w.currentIndex() if isinstance(w, QComboBox) else w.value()


def test_wheel_over_any_unfocused_field_changes_nothing_and_scrolls_the_form(qtbot, make_window):
    window = make_window()
    window.preview_tab.add_lora("/nowhere/style.safetensors")  # a row added later is guarded too
    window.training_tab.form.set_advanced_visible(True)
    qtbot.waitExposed(window)
    fields = [w for w in window.findChildren(QAbstractSpinBox) + window.findChildren(QComboBox) +
              window.findChildren(QAbstractSlider) if not isinstance(w, QScrollBar)]
    assert len(fields) >= 45  # every spin box, combo box and slider of the three tabs
    if QApplication.focusWidget() is not None:
        QApplication.focusWidget().clearFocus()
    changed = []
    for tab_index in range(window.tabs.count()):
        window.tabs.setCurrentIndex(tab_index)
        for w in fields:
            before = _value(w)
            _wheel(w)
            _wheel(w, 3)
            _wheel(w, -1)
            if _value(w) != before:
                changed.append(f"{w.objectName() or type(w).__name__}: {before} -> {_value(w)}")
    assert not changed, changed
    assert all(w.focusPolicy() == Qt.StrongFocus for w in fields)

    # the page scrolls instead
    window.tabs.setCurrentIndex(1)
    bar = window.training_tab.scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0)
    bar.setValue(0)
    rank = window.training_tab.form.editors["rank"]
    _wheel(rank, -3)
    assert bar.value() > 0 and rank.value() == 16


def _sd15_shaped_folder(folder: Path, xl_name: bool) -> Path:
    """The configs of an SD 1.5-sized pipeline (64-latent UNet, 4-level VAE): enough to detect, no weights."""
    target = folder / ("my-xl-style" if xl_name else "sd15")
    shutil.copytree(resource("models", "demo"), target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    unet = json.loads((target / "unet" / "config.json").read_text())
    vae = json.loads((target / "vae" / "config.json").read_text())
    unet["sample_size"], vae["block_out_channels"] = 64, [128, 256, 512, 512]
    (target / "unet" / "config.json").write_text(json.dumps(unet))
    (target / "vae" / "config.json").write_text(json.dumps(vae))
    return target


def test_resolution_and_presets_follow_the_detected_family_and_native_size(qtbot, make_window, tmp_path):
    window = make_window()
    tab = window.training_tab
    tab.set_gpu({"name": "CPU", "total": 0, "cuda": False})
    assert "demo model" not in tab.gpu_label.text()

    tab.model_picker.set_model("demo")
    assert tab.model_family() == "sd1" and tab.form.value("resolution") == 64
    tab.preset_combo.setCurrentIndex(tab.preset_combo.findData(8))
    assert tab.form.value("resolution") == 64  # a preset never raises it above the model's own size
    assert tab.form.value("train_batch_size") == cfgmod.PRESETS["sd1"][8]["train_batch_size"]

    # an SDXL model whose name has no "xl": the family comes from its files
    sdxl = shutil.copytree(resource("models", "demo-xl"), tmp_path / "my-model")
    tab.model_picker.set_model(str(sdxl))
    assert tab.model_family() == "sdxl"
    assert tab.form.value("rank") == cfgmod.PRESETS["sdxl"][8]["rank"]
    assert window.dataset_tab.model.sdxl  # the Bucket column plans SDXL buckets
    # an SD 1.5-sized model named "...xl...": SD 1.x, 512 px
    tab.model_picker.set_model(str(_sd15_shaped_folder(tmp_path, xl_name=True)))
    assert tab.model_family() == "sd1" and tab.form.value("resolution") == 512
    assert not window.dataset_tab.model.sdxl

    # a loaded config keeps its own resolution
    tab.set_config(cfgmod.TrainingConfig(pretrained_model_name_or_path="demo", resolution=96))
    assert tab.form.value("resolution") == 96


def test_long_paths_elide_and_the_window_fits_1280_px(qtbot, make_window, tmp_path):
    window = make_window()
    window.open_demo()
    qtbot.waitUntil(lambda: window.dataset_tab.model.rowCount() > 0, timeout=30000)
    assert window.minimumSizeHint().width() <= 1280
    deep = tmp_path.joinpath(*["a-rather-long-folder-name-for-pictures"] * 6)
    make_images(deep, 2)
    window.open_dataset(str(deep))
    qtbot.waitUntil(lambda: window.dataset_tab.model.rowCount() == 2, timeout=30000)
    label = window.dataset_tab.path_label
    assert label.toolTip() == str(deep) and label.full_text() == str(deep)
    assert window.minimumSizeHint().width() <= 1280
    window.resize(1280, 800)
    qtbot.wait(50)
    assert window.width() <= 1280


def test_settings_survive_a_restart_and_reset_brings_back_the_defaults(qtbot, make_window, tmp_path):
    ini = str(tmp_path / "kept.ini")
    first = make_window(settings=QSettings(ini, QSettings.IniFormat))
    first.training_tab.form.set_values({"resolution": 96, "max_train_steps": 123,
                                        "validation_prompt": "a photo of sks cat"})
    first.preview_tab.prompt.setPlainText("a sks cat on a sofa")
    first.preview_tab.steps.setValue(7)
    first.close()

    second = make_window(settings=QSettings(ini, QSettings.IniFormat))
    form = second.training_tab.form
    assert (form.value("resolution"), form.value("max_train_steps"), form.value("validation_prompt")) == \
        (96, 123, "a photo of sks cat")
    assert second.preview_tab.prompt.toPlainText() == "a sks cat on a sofa" and second.preview_tab.steps.value() == 7
    second.set_gpu({"name": "A card", "total": 8 * 1024**3, "cuda": True})  # the start-up probe's answer
    assert form.value("resolution") == 96  # the detected card's preset does not overwrite remembered settings

    second.reset_settings()
    defaults = cfgmod.TrainingConfig()
    assert form.value("max_train_steps") == defaults.max_train_steps
    assert form.value("validation_prompt") == defaults.validation_prompt
    assert form.value("resolution") == 64  # the default model's (demo) own size, not 512
    assert second.preview_tab.steps.value() == 12
    second.close()
    third = make_window(settings=QSettings(ini, QSettings.IniFormat))
    assert third.training_tab.form.value("max_train_steps") == defaults.max_train_steps


def test_a_dataset_brings_back_its_last_runs_settings(qtbot, make_window, tmp_path):
    from lora_studio.gui import settings_store

    data = make_images(tmp_path / "cats", 2)
    out = tmp_path / "runs" / "cats"
    out.mkdir(parents=True)
    cfgmod.save(cfgmod.TrainingConfig(train_data_dir=str(data), output_dir=str(out), max_train_steps=77,
                                      resolution=64), out / "config.toml")  # what a run writes
    window = make_window()
    settings_store.remember_run(window.settings, str(data), str(out))
    window.open_dataset(str(data))
    qtbot.waitUntil(lambda: window.dataset_tab.model.rowCount() == 2, timeout=20000)
    assert window.training_tab.form.value("max_train_steps") == 77
    assert window.training_tab.form.value("train_data_dir") == str(data)


def test_footer_counts_inline_edits_and_missing_captions_as_start_does(qtbot, make_window, tmp_path):
    data = make_images(tmp_path / "ds", 3, size=(64, 64), captions=False)
    window = make_window()
    tab = window.dataset_tab
    window.training_tab.form.set_values({"mode": "style", "train_data_dir": str(data), "resolution": 64,
                                         "output_dir": str(tmp_path / "out"), "report_to": "none"})
    window.open_dataset(str(data))
    qtbot.waitUntil(lambda: tab.model.rowCount() == 3, timeout=20000)
    assert "0 captioned · 3 errors" in tab.summary.text()
    # an inline edit, as the table's editor commits it
    tab.model.setData(tab.model.index(0, COL_CAPTION), "a red toy", Qt.EditRole)
    qtbot.waitUntil(lambda: "1 captioned · 2 errors" in tab.summary.text(), timeout=2000)
    listed = [tab.problem_list.item(i).text() for i in range(tab.problem_list.count())]
    assert sum("has no caption" in t for t in listed) == 2

    # Start refuses exactly the pictures the folder check counted
    training = window.training_tab
    with qtbot.waitSignal(training.run_failed, timeout=300000) as failed:
        training.start_btn.click()
    assert "2 of 3 image(s)" in failed.args[0]
    training.last_dialog.close()
    # DreamBooth trains uncaptioned pictures with the instance prompt: no errors then
    training.form.set_values({"mode": "dreambooth", "instance_prompt": "a photo of sks toy"})
    assert "1 captioned · 0 errors" in tab.summary.text()


class _Opened(QObject):
    def __init__(self):
        super().__init__()
        self.urls = []

    @Slot("QUrl")
    def show(self, url):
        self.urls.append(url.toLocalFile())


@pytest.fixture
def opened():
    receiver = _Opened()
    QDesktopServices.setUrlHandler("file", receiver, "show")  # the desktop's file manager stays closed
    yield receiver
    QDesktopServices.unsetUrlHandler("file")


def test_open_output_folder_shows_and_opens_the_absolute_path(qtbot, make_window, tmp_path, monkeypatch, opened):
    monkeypatch.chdir(tmp_path)
    window = make_window()
    button = window.training_tab.open_output
    window.training_tab.form.set_values({"output_dir": "runs/first"})
    assert button.toolTip() == str(tmp_path / "runs" / "first")
    (tmp_path / "runs" / "first").mkdir(parents=True)
    button.click()
    assert opened.urls == [str(tmp_path / "runs" / "first")]


@pytest.mark.slow
def test_comparison_grid_counts_images_enters_history_and_saves_with_its_settings(qtbot, make_window, tiny_sd1,
                                                                                tiny_loras, tmp_path, opened):
    from lora_studio.core import events as ev
    from lora_studio.gui.dialogs.grid import GridResult

    window = make_window()
    tab = window.preview_tab
    tab.model_picker.set_model(str(tiny_sd1))
    tab.steps.setValue(2)
    row = tab.add_lora(str(tiny_loras[0]))
    seen = []
    tab.worker.event.connect(seen.append)
    with qtbot.waitSignal(tab.grid_ready, timeout=300000):
        tab.run_grid(row.adapter_name, [0.0, 1.0], [1, 2])
    grid_events = [e for e in seen if getattr(e, "phase", "") == "grid"]
    assert isinstance(grid_events[0], ev.Started) and grid_events[0].total_steps == 4
    assert [e.step for e in grid_events[1:]] == [1, 2, 3, 4]
    assert tab.progress.maximum() == 4 and tab.progress.format() == "%v / %m images"
    assert tab.history_list.count() == 1 and tab.history[0][1]["kind"] == "grid"

    dialog = tab.last_dialog
    assert isinstance(dialog, GridResult)
    png, settings = dialog.save(str(tmp_path / "grids" / "style_a"))
    assert png == str(tmp_path / "grids" / "style_a.png") and Path(png).stat().st_size > 0
    saved = json.loads(Path(settings).read_text())
    assert saved["weights"] == [0.0, 1.0] and saved["seeds"] == [1, 2] and saved["steps"] == 2
    assert saved["model"] == str(tiny_sd1) and saved["adapter"] == row.adapter_name
    dialog.open_folder.click()
    assert opened.urls == [str(tmp_path / "grids")]
