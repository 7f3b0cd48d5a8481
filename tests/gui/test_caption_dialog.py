"""Caption a folder from the Dataset tab, edit a tag in the tag view, undo: the files on disk follow every step.
And the Training tab asks before a run whose captions lack the trigger word."""

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from lora_studio.core.dataset import Dataset


def _render(folder: Path, n: int, captioned: int) -> Path:
    from lora_studio.core.demo.renderer import render

    folder.mkdir(parents=True)
    for i in range(n):
        img, _ = render(11, i)
        img.save(folder / f"p{i}.png")
        if i < captioned:
            (folder / f"p{i}.txt").write_text(f"mine {i}", encoding="utf-8")
    return folder


def _disk(folder: Path, n: int) -> list[str]:
    return [(folder / f"p{i}.txt").read_text(encoding="utf-8") if (folder / f"p{i}.txt").exists() else ""
            for i in range(n)]


def _app(tab) -> list[str]:
    return [item.caption for item in tab.model.dataset]


def _open(qtbot, window, folder, n):
    window.open_dataset(str(folder))
    qtbot.waitUntil(lambda: window.dataset_tab.model.rowCount() == n, timeout=20000)
    return window.dataset_tab


def test_caption_a_folder_then_rename_a_tag_then_undo_both(qtbot, make_window, tmp_path):
    folder = _render(tmp_path / "ds", 4, captioned=2)
    tab = _open(qtbot, make_window(), folder, 4)
    before = _disk(folder, 4)
    assert before == ["mine 0", "mine 1", "", ""]

    dlg = tab.caption_tools.open_caption()
    dlg.model.setCurrentText("demo")
    dlg.mode.setCurrentIndex(dlg.mode.findData("empty"))
    dlg.trigger.setText("zq")
    with qtbot.waitSignal(dlg.done, timeout=60000) as done:
        assert dlg.start()
    assert done.args == [4]  # two drafted, two given the trigger
    captioned = _disk(folder, 4)
    assert captioned[:2] == ["zq, mine 0", "zq, mine 1"]
    assert all(t.startswith("zq, a ") for t in captioned[2:])
    assert _app(tab) == captioned and tab.model.undo_stack.count() == 1  # one undo step for the batch

    tags = tab.caption_tools.open_tags().view
    assert tags.counts()["zq"] == 4
    assert tags.rename("zq", "zebra") == 4
    renamed = _disk(folder, 4)
    assert renamed == [t.replace("zq", "zebra") for t in captioned] and _app(tab) == renamed
    qtbot.waitUntil(lambda: "zebra" in tags.counts() and "zq" not in tags.counts(), timeout=5000)

    tab.undo_btn.click()
    assert _disk(folder, 4) == captioned and _app(tab) == captioned
    tab.undo_btn.click()
    assert _disk(folder, 4) == before and _app(tab) == before
    # reopening reads the same captions back
    assert [item.caption for item in Dataset.open(folder)] == before


def test_tag_view_adds_to_the_selection_and_deletes_everywhere(qtbot, make_window, tmp_path):
    folder = _render(tmp_path / "ds", 3, captioned=3)
    for i, text in enumerate(["red, circle", "blue, circle", "red, star"]):
        (folder / f"p{i}.txt").write_text(text, encoding="utf-8")
    tab = _open(qtbot, make_window(), folder, 3)
    view = tab.caption_tools.open_tags().view
    assert view.counts() == {"red": 2, "circle": 2, "blue": 1, "star": 1}
    view.show_tokens(2)
    assert [view.tokens.item(i).text() for i in range(view.tokens.count())] == ["red", "star"]
    view.filter.setText("ci")
    assert view.proxy.rowCount() == 1
    assert view.add("flat", rows=[0, 2]) == 2
    assert _disk(folder, 3) == ["red, circle, flat", "blue, circle", "red, star, flat"]
    assert view.delete("red") == 2
    assert _disk(folder, 3) == ["circle, flat", "blue, circle", "star, flat"]
    tab.model.undo_stack.undo()
    tab.model.undo_stack.undo()
    assert _disk(folder, 3) == ["red, circle", "blue, circle", "red, star"]


def test_cancel_writes_nothing_it_did_not_draft(qtbot, make_window, tmp_path):
    folder = _render(tmp_path / "ds", 3, captioned=0)
    tab = _open(qtbot, make_window(), folder, 3)
    dlg = tab.caption_tools.open_caption()
    dlg.model.setCurrentText("demo")
    with qtbot.waitSignal(dlg.done, timeout=60000) as done:
        dlg.start()
        dlg.cancel()  # before the first batch: the captioner is still loading
    assert done.args == [0] and _disk(folder, 3) == ["", "", ""]


def _answer(button_text: str, seen: list):
    def click():
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, click)
            return
        seen.append(box.text())
        next(b for b in box.buttons() if b.text().startswith(button_text)).click()
    QTimer.singleShot(0, click)


def test_training_tab_asks_before_a_run_whose_captions_lack_the_trigger(qtbot, make_window, tmp_path):
    folder = _render(tmp_path / "ds", 10, captioned=10)
    for i in range(3, 10):
        (folder / f"p{i}.txt").write_text(f"zebra, mine {i}", encoding="utf-8")
    window = make_window()
    tab = window.training_tab
    tab.form.set_values(dict(train_data_dir=str(folder), trigger_word="zebra", output_dir=str(tmp_path / "out")))
    seen = []
    _answer("Cancel", seen)
    assert tab.start() is False and not tab.is_running()
    assert seen == ["3 of 10 captions lack the trigger word 'zebra'."]

    from lora_studio.gui.trigger_dialog import confirm_start

    _answer("Add it", seen)
    assert confirm_start(tab, tab.config()) is True
    assert all(t.startswith("zebra") for t in _disk(folder, 10))
    assert _disk(folder, 10)[:3] == ["zebra, mine 0", "zebra, mine 1", "zebra, mine 2"]
    # every caption has it now: no question
    tab.last_dialog = None
    assert confirm_start(tab, tab.config()) is True and tab.last_dialog is None
