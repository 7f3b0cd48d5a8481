from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtWidgets import QLineEdit

from lora_studio.gui.models.caption_model import COL_CAPTION
from tests.gui.conftest import make_images


def _open(qtbot, window, folder, n):
    window.open_dataset(str(folder))
    qtbot.waitUntil(lambda: window.dataset_tab.model.rowCount() == n, timeout=20000)
    return window.dataset_tab


def test_caption_edited_in_table_is_on_disk_within_a_second_and_survives_reopening(qtbot, make_window, tmp_path):
    folder = make_images(tmp_path / "ds", 3)
    window = make_window()
    tab = _open(qtbot, window, folder, 3)
    proxy_index = tab.proxy.index(1, COL_CAPTION)
    assert proxy_index.data() == "caption 1"

    # edit like a user: open the inline editor, type, press Enter
    tab.table.setCurrentIndex(proxy_index)
    tab.table.edit(proxy_index)
    editor = tab.table.findChild(QLineEdit)
    assert editor is not None and editor.isVisible()
    editor.selectAll()
    qtbot.keyClicks(editor, "a red toy, studio light")
    qtbot.keyClick(editor, Qt.Key_Return)
    sidecar = folder / "img0001.txt"
    qtbot.waitUntil(lambda: sidecar.read_text(encoding="utf-8") == "a red toy, studio light", timeout=20000)
    assert not list(folder.glob(".*.tmp"))  # atomic: no temporaries left behind

    # reopening reads it back from disk
    tab.reopen()
    qtbot.waitUntil(lambda: tab.model.dataset.items[1].caption == "a red toy, studio light", timeout=20000)
    assert tab.proxy.index(1, COL_CAPTION).data() == "a red toy, studio light"

    # undo writes the old caption back at once, redo the new one
    tab.model.undo_stack.clear()
    tab.model.setData(tab.model.index(0, COL_CAPTION), "first")
    assert (folder / "img0000.txt").read_text(encoding="utf-8") == "first"
    tab.undo_btn.click()
    assert (folder / "img0000.txt").read_text(encoding="utf-8") == "caption 0"
    tab.redo_btn.click()
    assert (folder / "img0000.txt").read_text(encoding="utf-8") == "first"


def test_bulk_trigger_and_find_replace_on_selection_are_one_undo_step(qtbot, make_window, tmp_path):
    folder = make_images(tmp_path / "ds", 4)
    window = make_window()
    tab = _open(qtbot, window, folder, 4)
    tab.table.selectRow(0)
    tab.table.selectionModel().select(tab.proxy.index(2, 0), QItemSelectionModel.Select | QItemSelectionModel.Rows)
    assert tab.selected_rows() == [0, 2]
    tab.trigger.setText("sks")
    assert tab.add_trigger("prepend") == 2
    assert (folder / "img0000.txt").read_text(encoding="utf-8") == "sks, caption 0"
    assert (folder / "img0001.txt").read_text(encoding="utf-8") == "caption 1"
    tab.find.setText("caption")
    tab.replace.setText("photo")
    assert tab.find_replace() == 2
    assert (folder / "img0002.txt").read_text(encoding="utf-8") == "sks, photo 2"
    tab.model.undo_stack.undo()
    assert (folder / "img0002.txt").read_text(encoding="utf-8") == "sks, caption 2"
    tab.model.undo_stack.undo()
    assert (folder / "img0002.txt").read_text(encoding="utf-8") == "caption 2"

    tab.search.setText("caption 3")
    assert tab.proxy.rowCount() == 1


def test_opening_a_1000_image_folder_never_blocks_the_gui(qtbot, make_window, tmp_path, probe):
    folder = make_images(tmp_path / "big", 1000, size=(32, 24))
    window = make_window()
    tab = window.dataset_tab
    probe.start()
    window.open_dataset(str(folder))
    qtbot.waitUntil(lambda: tab.model.rowCount() == 1000, timeout=60000)
    qtbot.waitUntil(lambda: tab.model.thumbnails_ready() >= 5, timeout=10000)  # visible rows load lazily
    tab.table.scrollToBottom()
    qtbot.waitUntil(lambda: tab.model.dataset.items[999].name == "img0999.png", timeout=1000)
    qtbot.wait(300)
    tab.search.setText("img09")
    qtbot.waitUntil(lambda: tab.proxy.rowCount() == 100, timeout=2000)
    probe.stop()
    assert tab.model.thumbnails_ready() < 1000  # lazily: only what was on screen
    assert probe.ticks > 10
    # how long the GUI loop was blocked: measured by bench/gui_block.py, not asserted (no wall-clock bars)


def test_generate_class_images_then_delete_bad_ones_in_the_review_grid(qtbot, make_window, tmp_path, tiny_sd1):
    from lora_studio.gui.dialogs.class_images import ClassImagesReview

    window = make_window()
    tab = window.training_tab
    tab.model_picker.set_model(str(tiny_sd1))
    # DreamBooth settings have one home: the training form, i.e. the run config's own fields
    tab.form.set_values({"resolution": 64, "sample_steps": 2, "sample_batch_size": 2, "mode": "dreambooth",
                         "instance_prompt": "a photo of sks shape", "class_prompt": "a shape",
                         "class_data_dir": str(tmp_path / "class"), "num_class_images": 3,
                         "with_prior_preservation": True})
    assert not hasattr(window.dataset_tab, "instance_prompt")
    cfg = tab.config()
    assert (cfg.mode, cfg.class_prompt, cfg.num_class_images, cfg.with_prior_preservation) == \
        ("dreambooth", "a shape", 3, True)
    panel = tab.class_images
    panel.gen_btn.click()
    qtbot.waitUntil(lambda: isinstance(panel.last_dialog, ClassImagesReview), timeout=120000)
    review = panel.last_dialog
    assert review.grid.count() == 3 and len(list((tmp_path / "class").glob("*.png"))) == 3
    review.grid.item(1).setSelected(True)
    assert review.delete_selected() == 1
    assert review.grid.count() == 2 and len(list((tmp_path / "class").glob("*.png"))) == 2
    review.close()


def test_opening_another_folder_while_one_is_scanning_shows_the_second(qtbot, make_window, tmp_path):
    # The first scan is still running when the second folder is opened: its thread must outlive the
    # replacement (a QThread destroyed while running aborts the whole app), and its result must not win.
    first = make_images(tmp_path / "first", 40)
    second = make_images(tmp_path / "second", 3)
    window = make_window()
    window.open_dataset(str(first))
    window.open_dataset(str(second))
    tab = window.dataset_tab
    qtbot.waitUntil(lambda: tab.model.rowCount() == 3 and not tab._stopping, timeout=30000)
    qtbot.wait(200)
    assert tab.model.rowCount() == 3 and tab.path == str(second)
