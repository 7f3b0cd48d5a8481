"""Issue 27, defect 10: a caption edited in the table keeps its file's mode (an atomic write's temporary file
was 0600, and the rename left every edited caption unreadable to other users)."""

import os
import stat
import sys

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit

from lora_studio.gui.models.caption_model import COL_CAPTION
from tests.gui.conftest import make_images


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX permission bits")
def test_a_caption_edited_in_the_table_keeps_0644(qtbot, make_window, tmp_path):
    old_umask = os.umask(0o022)
    try:
        folder = make_images(tmp_path / "ds", 2)
        sidecar = folder / "img0001.txt"
        os.chmod(sidecar, 0o644)
        window = make_window()
        window.open_dataset(str(folder))
        tab = window.dataset_tab
        qtbot.waitUntil(lambda: tab.model.rowCount() == 2, timeout=20000)
        index = tab.proxy.index(1, COL_CAPTION)
        tab.table.setCurrentIndex(index)
        tab.table.edit(index)
        editor = tab.table.findChild(QLineEdit)
        editor.selectAll()
        qtbot.keyClicks(editor, "a red toy")
        qtbot.keyClick(editor, Qt.Key_Return)
        qtbot.waitUntil(lambda: sidecar.read_text(encoding="utf-8") == "a red toy", timeout=20000)
        assert stat.S_IMODE(sidecar.stat().st_mode) == 0o644
    finally:
        os.umask(old_umask)
