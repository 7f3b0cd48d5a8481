"""Pictures the app writes (preview "Save image", grids, screenshots) go through one atomic writer."""

from __future__ import annotations

import pytest
from PIL import Image
from PySide6.QtGui import QColor, QImage

from lora_studio.gui.widgets.image_view import save_png


def test_writes_a_png_and_a_failed_write_keeps_the_old_file(qapp, tmp_path):
    img = QImage(8, 6, QImage.Format_RGB32)
    img.fill(QColor(200, 30, 40))
    out = save_png(img, str(tmp_path / "sub" / "pic.png"))
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (8, 6) and im.convert("RGB").getpixel((0, 0)) == (200, 30, 40)
    before = (tmp_path / "sub" / "pic.png").read_bytes()
    with pytest.raises(OSError, match="pic.png"):
        save_png(QImage(), out)  # a null image: Qt refuses to write it
    assert (tmp_path / "sub" / "pic.png").read_bytes() == before
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["pic.png"]  # no temporary file left behind
