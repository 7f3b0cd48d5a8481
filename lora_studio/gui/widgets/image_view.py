"""A zoomable, pannable image view and small image helpers."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsScene, QGraphicsView


def to_qimage(img) -> QImage:
    """A PIL image (or QImage) as a QImage that owns its pixels (ImageQt shares the PIL buffer: copy)."""
    if isinstance(img, QImage):
        return img
    from PIL.ImageQt import ImageQt

    return QImage(ImageQt(img)).copy()


def save_png(image, path: str) -> str:
    """A QImage or QPixmap written as PNG atomically (a half-written file never replaces a good one); returns the
    absolute path. Raises OSError naming the file when Qt cannot write it."""
    import os

    from lora_studio.core.io import write_with

    path = os.path.abspath(path)

    def write(tmp) -> None:
        if not image.save(str(tmp), "PNG"):
            raise OSError(f"could not write {path}")

    write_with(path, write)
    return path


class ImageView(QGraphicsView):
    """Wheel zooms around the cursor, drag pans, double-click fits the image to the view."""

    zoomed = Signal(float)

    def __init__(self, parent=None, placeholder: str = "No image yet"):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self._item = QGraphicsPixmapItem()
        self._item.setTransformationMode(Qt.SmoothTransformation)
        self.scene().addItem(self._item)
        self.placeholder = placeholder
        self._fit = True
        self.setRenderHints(QPainter.Antialiasing | QPainter.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setBackgroundBrush(QColor("#2a2e37"))
        self.setMinimumSize(200, 200)

    def has_image(self) -> bool:
        return not self._item.pixmap().isNull()

    def set_image(self, image) -> None:
        qimg = to_qimage(image)
        self._item.setPixmap(QPixmap.fromImage(qimg))
        self.scene().setSceneRect(QRectF(self._item.pixmap().rect()))
        if self._fit:
            self.fit()

    def image(self) -> QImage:
        return self._item.pixmap().toImage()

    def fit(self) -> None:
        if self.has_image():
            self._fit = True
            self.fitInView(self._item, Qt.KeepAspectRatio)
            self._zoom_changed()

    def zoom(self, factor: float) -> None:
        self._fit = False
        self.scale(factor, factor)
        self._zoom_changed()

    def _zoom_changed(self) -> None:
        scale = self.transform().m11()
        # magnified a lot, show the real pixels rather than a blur
        self._item.setTransformationMode(Qt.FastTransformation if scale >= 3 else Qt.SmoothTransformation)
        self.zoomed.emit(scale)

    def wheelEvent(self, event) -> None:
        if self.has_image():
            self.zoom(1.25 if event.angleDelta().y() > 0 else 0.8)

    def mouseDoubleClickEvent(self, event) -> None:
        self.fit()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fit:
            self.fit()

    def drawForeground(self, painter: QPainter, rect) -> None:
        if not self.has_image():
            painter.resetTransform()
            painter.setPen(QColor("#9aa3b2"))
            painter.drawText(self.viewport().rect(), Qt.AlignCenter, self.placeholder)
