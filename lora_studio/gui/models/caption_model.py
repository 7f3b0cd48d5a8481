"""Qt table model over the dataset layer's ``Dataset``: the Dataset owns items and captions, this shows them.

Every caption edit goes through a QUndoStack command that calls ``Dataset.set_caption(s)``, which writes
atomically at once; the Dataset's caption listeners tell the model which rows to repaint.
"""

from __future__ import annotations

from PySide6.QtCore import (QAbstractTableModel, QModelIndex, QObject, QSize, QSortFilterProxyModel, Qt,
                            QThreadPool, Signal)
from PySide6.QtGui import QBrush, QColor, QImage, QPixmap, QUndoCommand, QUndoStack

from lora_studio.gui.workers import ThumbnailTask, _ThumbSignals

THUMB = 56
COLUMNS = ["", "File", "Caption", "Size", "Bucket", "Problems"]
COL_THUMB, COL_FILE, COL_CAPTION, COL_SIZE, COL_BUCKET, COL_PROBLEMS = range(6)
ItemRole = Qt.UserRole + 1


class CaptionEdit(QUndoCommand):
    """Captions of some rows changed from ``old`` to ``new``; applied through the Dataset (atomic writes)."""

    def __init__(self, dataset, changes: list[tuple[int, str, str]], text: str, applied: bool = False):
        super().__init__(text)
        self.dataset = dataset
        self.changes = changes  # (row, old, new)
        self._skip_first = applied

    def redo(self) -> None:
        if self._skip_first:
            self._skip_first = False
            return
        self.dataset.set_captions([(i, new) for i, _, new in self.changes])

    def undo(self) -> None:
        self.dataset.set_captions([(i, old) for i, old, _ in self.changes])


class CaptionTableModel(QAbstractTableModel):
    error = Signal(str, str)
    thumbnails_loaded = Signal(int)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.dataset = None
        self.undo_stack = QUndoStack(self)
        self.model_name = "demo"
        self.resolution = 64
        self.sdxl = False
        self.enable_bucket = True
        self.no_upscale = False
        self._buckets = None
        self._thumbs: dict[str, QPixmap] = {}
        self._pending: set[str] = set()
        self._row_of: dict[str, int] = {}
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self._signals = _ThumbSignals()
        self._signals.done.connect(self._thumb_done)
        self._placeholder = QPixmap(THUMB, THUMB)
        self._placeholder.fill(QColor("#dde1e8"))

    # ------------------------------------------------------------------------------------------ dataset
    def set_dataset(self, dataset) -> None:
        self.beginResetModel()
        if self.dataset is not None and self._on_caption_saved in self.dataset.caption_listeners:
            self.dataset.caption_listeners.remove(self._on_caption_saved)
        self.dataset = dataset
        self._thumbs.clear()
        self._pending.clear()
        self._row_of = {str(item.path): i for i, item in enumerate(dataset.items)} if dataset else {}
        if dataset is not None:
            dataset.caption_listeners.append(self._on_caption_saved)
        self.undo_stack.clear()
        self.endResetModel()

    def buckets(self):
        """The buckets training will use for the chosen model and settings (core's one planner)."""
        if self._buckets is None:
            from lora_studio.core.dataset import make_buckets, plan_buckets
            from lora_studio.errors import LoraStudioError

            try:
                self._buckets = plan_buckets(self.model_name, self.resolution, enable_bucket=self.enable_bucket,
                                             no_upscale=self.no_upscale)
            except LoraStudioError:  # a model path still being typed: the family's usual step
                self._buckets = make_buckets(max(self.resolution, 64), sdxl=self.sdxl, no_upscale=self.no_upscale,
                                             square_only=not self.enable_bucket)
        return self._buckets

    def set_plan(self, model: str, resolution: int, *, sdxl: bool = False, enable_bucket: bool = True,
                 no_upscale: bool = False) -> None:
        """Show the buckets of a run on ``model`` at ``resolution`` (the Training tab's settings)."""
        self.model_name, self.resolution, self.sdxl = model, resolution, sdxl
        self.enable_bucket, self.no_upscale = enable_bucket, no_upscale
        self._buckets = None
        if self.rowCount():
            self.dataChanged.emit(self.index(0, COL_BUCKET), self.index(self.rowCount() - 1, COL_BUCKET))

    def set_resolution(self, resolution: int, sdxl: bool | None = None) -> None:
        self.set_plan(self.model_name, resolution, sdxl=self.sdxl if sdxl is None else sdxl,
                      enable_bucket=self.enable_bucket, no_upscale=self.no_upscale)

    def _on_caption_saved(self, row: int) -> None:
        self.dataChanged.emit(self.index(row, COL_CAPTION), self.index(row, COL_PROBLEMS))

    # ------------------------------------------------------------------------------------------- shape
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() or self.dataset is None else len(self.dataset.items)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return COLUMNS[section]
        return None

    def flags(self, index):
        f = super().flags(index)
        if index.column() == COL_CAPTION:
            f |= Qt.ItemIsEditable
        return f

    # -------------------------------------------------------------------------------------------- data
    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or self.dataset is None:
            return None
        item = self.dataset.items[index.row()]
        col = index.column()
        if role == ItemRole:
            return item
        if col == COL_THUMB:
            if role == Qt.DecorationRole:
                return self._thumbnail(str(item.path))
            if role == Qt.SizeHintRole:
                return QSize(THUMB + 8, THUMB + 8)
            return None
        if role in (Qt.DisplayRole, Qt.EditRole):
            if col == COL_FILE:
                return item.name
            if col == COL_CAPTION:
                return item.caption if role == Qt.EditRole else item.caption.strip().replace("\n", " ⏎ ")
            if col == COL_SIZE:
                return f"{item.size[0]} × {item.size[1]}" if item.size else "unreadable"
            if col == COL_BUCKET:
                if not item.size:
                    return "–"
                b = self.buckets().assign(item.size)
                return f"{b[0]} × {b[1]}"
            if col == COL_PROBLEMS:
                return "; ".join(p.message for p in item.problems) if item.problems else ""
        if role == Qt.ToolTipRole:
            if col == COL_CAPTION:
                return item.caption or "(no caption)"
            if col == COL_PROBLEMS and item.problems:
                return "\n".join(f"{p.severity}: {p.message}" + (f" — {p.advice}" if p.advice else "")
                                 for p in item.problems)
            if col == COL_FILE:
                return str(item.path)
        if role == Qt.ForegroundRole:
            if col == COL_PROBLEMS and item.problems:
                return QBrush(QColor("#d0342c" if item.errors else "#a86b00"))
            if col == COL_CAPTION and not item.caption.strip():
                return QBrush(QColor("#9aa1ad"))
        return None

    def setData(self, index, value, role=Qt.EditRole) -> bool:
        if role != Qt.EditRole or index.column() != COL_CAPTION or self.dataset is None:
            return False
        row = index.row()
        old = self.dataset.items[row].caption
        if value == old:
            return False
        return self.apply([(row, old, str(value))], f"Edit caption of {self.dataset.items[row].name}")

    def apply(self, changes: list[tuple[int, str, str]], text: str) -> bool:
        """Write caption changes now (through the Dataset) and record them for undo."""
        cmd = CaptionEdit(self.dataset, changes, text)
        try:
            cmd.redo()
        except Exception as exc:  # noqa: BLE001 - the user sees it; nothing was half-written (atomic)
            from lora_studio.errors import describe

            self.error.emit(*describe(exc))
            return False
        cmd._skip_first = True
        self.undo_stack.push(cmd)
        return True

    def bulk(self, rows: list[int], text: str, operation) -> int:
        """Run a Dataset bulk operation (add_trigger, find_replace) on ``rows`` as one undoable step."""
        before = {i: self.dataset.items[i].caption for i in rows}
        try:
            operation(rows)
        except Exception as exc:  # noqa: BLE001
            from lora_studio.errors import describe

            self.error.emit(*describe(exc))
            return 0
        changes = [(i, old, self.dataset.items[i].caption) for i, old in before.items()
                   if self.dataset.items[i].caption != old]
        if changes:
            self.undo_stack.push(CaptionEdit(self.dataset, changes, text, applied=True))
        return len(changes)

    # -------------------------------------------------------------------------------------- thumbnails
    def _thumbnail(self, path: str):
        pix = self._thumbs.get(path)
        if pix is not None:
            return pix
        if path not in self._pending:
            self._pending.add(path)
            self._pool.start(ThumbnailTask(path, THUMB, self._signals))
        return self._placeholder

    def _thumb_done(self, path: str, image: QImage) -> None:
        self._pending.discard(path)
        row = self._row_of.get(path)
        if row is None:
            return
        pix = QPixmap.fromImage(image) if not image.isNull() else self._broken()
        self._thumbs[path] = pix
        idx = self.index(row, COL_THUMB)
        self.dataChanged.emit(idx, idx, [Qt.DecorationRole])
        self.thumbnails_loaded.emit(len(self._thumbs))

    def _broken(self) -> QPixmap:
        pix = QPixmap(THUMB, THUMB)
        pix.fill(QColor("#f4c7c3"))
        return pix

    def thumbnails_ready(self) -> int:
        return len(self._thumbs)

    def shutdown(self) -> None:
        self._pool.clear()
        self._pool.waitForDone(3000)


class CaptionFilter(QSortFilterProxyModel):
    """Filter by text in file name or caption; optionally only rows with problems."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.text = ""
        self.problems_only = False
        self.setSortCaseSensitivity(Qt.CaseInsensitive)

    def set_text(self, text: str) -> None:
        self.text = text.casefold()
        self.invalidateFilter()

    def set_problems_only(self, on: bool) -> None:
        self.problems_only = on
        self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent) -> bool:
        model = self.sourceModel()
        if model is None or model.dataset is None:
            return True
        item = model.dataset.items[source_row]
        if self.problems_only and not item.problems:
            return False
        if self.text:
            return self.text in item.name.casefold() or self.text in item.caption.casefold()
        return True
