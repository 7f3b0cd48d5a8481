"""Form fields take the mouse wheel only when focused; otherwise the wheel scrolls the page they sit on.

Without this a wheel that passes over a spin box, combo box or slider while scrolling the form changes it
unnoticed (rank 16 became 10, a learning rate 1.34e-05).
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractScrollArea, QAbstractSlider, QAbstractSpinBox, QComboBox, QScrollBar, QWidget

FIELDS = (QAbstractSpinBox, QComboBox, QAbstractSlider)


def is_field(widget: QObject) -> bool:
    return isinstance(widget, FIELDS) and not isinstance(widget, QScrollBar)


class WheelGuard(QObject):
    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() != QEvent.Wheel or not isinstance(obj, QWidget) or obj.hasFocus():
            return False
        area = _scroll_area_of(obj)
        if area is not None:
            bar = area.verticalScrollBar() if area.verticalScrollBar().isVisible() else area.horizontalScrollBar()
            QCoreApplication.sendEvent(bar, event)
        return True  # the unfocused field never sees it


def _scroll_area_of(widget: QWidget) -> QAbstractScrollArea | None:
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea) and not is_field(parent):
            return parent
        parent = parent.parentWidget()
    return None


_guard: WheelGuard | None = None


def guard_wheel(root: QWidget) -> int:
    """Apply the rule to ``root`` and every field inside it (call again for widgets added later)."""
    global _guard
    if _guard is None:
        _guard = WheelGuard(QCoreApplication.instance())
    fields = [root] if is_field(root) else []
    fields += [w for w in root.findChildren(QWidget) if is_field(w)]
    for w in fields:
        w.setFocusPolicy(Qt.StrongFocus)  # the default WheelFocus lets the wheel take focus, then the value
        w.removeEventFilter(_guard)
        w.installEventFilter(_guard)
    return len(fields)
