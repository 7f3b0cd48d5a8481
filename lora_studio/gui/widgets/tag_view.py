"""The tag view: a dataset's comma tags as tokens, a frequency table (sort, filter), and edits everywhere.

Every edit goes through the caption table model's ``bulk`` (Dataset writes, atomic, one undo step).
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QInputDialog, QLabel, QLineEdit,
                               QListView, QListWidget, QPushButton, QTableView, QVBoxLayout, QWidget)

from lora_studio.core.caption.tags import add_tag, remove_tag, rename_tag, split_tags, tag_counts

TOKEN_STYLE = ("QListWidget::item { border: 1px solid #9aa8c0; border-radius: 9px; padding: 1px 7px; margin: 2px; }"
               "QListWidget::item:selected { background: #3d6fd6; color: white; }")


class TagTableModel(QAbstractTableModel):
    HEADERS = ("Tag", "Images")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[tuple[str, int]] = []

    def set_counts(self, counts: dict[str, int]) -> None:
        self.beginResetModel()
        self.rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else 2

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return self.HEADERS[section]
        return None

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        tag, count = self.rows[index.row()]
        if role == Qt.DisplayRole:
            return tag if index.column() == 0 else count
        if role == Qt.UserRole:
            return tag
        return None


class TagView(QWidget):
    """``caption_model``: the Dataset tab's CaptionTableModel; ``selected_rows()``: the rows "add" applies to."""

    changed = Signal(int)  # captions rewritten by the last edit

    def __init__(self, caption_model, selected_rows: Callable[[], list[int]], parent=None):
        super().__init__(parent)
        self.captions = caption_model
        self.selected_rows = selected_rows
        self.model = TagTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterCaseSensitivity(Qt.CaseInsensitive)
        self.proxy.setSortRole(Qt.DisplayRole)
        self._recount = QTimer(self, singleShot=True, interval=30)  # many rows change at once: count once
        self._recount.timeout.connect(self.refresh)
        for sig in (caption_model.dataChanged, caption_model.modelReset):
            sig.connect(lambda *_: self._recount.start())
        self._build()
        self.refresh()

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Tags of the current image:"))
        self.tokens = QListWidget()
        self.tokens.setFlow(QListView.LeftToRight)
        self.tokens.setWrapping(True)
        self.tokens.setResizeMode(QListView.Adjust)
        self.tokens.setMaximumHeight(84)
        self.tokens.setStyleSheet(TOKEN_STYLE)
        self.tokens.itemClicked.connect(lambda item: self.select_tag(item.text()))
        lay.addWidget(self.tokens)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter tags…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        lay.addWidget(self.filter)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(1, Qt.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        lay.addWidget(self.table, 1)
        row = QHBoxLayout()
        rename = QPushButton("Rename…")
        rename.clicked.connect(self._ask_rename)
        delete = QPushButton("Delete everywhere")
        delete.setObjectName("danger")
        delete.clicked.connect(lambda: self.current_tag() and self.delete(self.current_tag()))
        row.addWidget(rename)
        row.addWidget(delete)
        lay.addLayout(row)
        add_row = QHBoxLayout()
        self.new_tag = QLineEdit()
        self.new_tag.setPlaceholderText("tag to add")
        add = QPushButton("Add to selection")
        add.clicked.connect(lambda: self.add(self.new_tag.text()))
        add_row.addWidget(self.new_tag, 1)
        add_row.addWidget(add)
        lay.addLayout(add_row)
        self.summary = QLabel()
        self.summary.setObjectName("hint")
        lay.addWidget(self.summary)

    # ------------------------------------------------------------------------------------------- reading
    def _dataset(self):
        return self.captions.dataset

    def refresh(self) -> None:
        ds = self._dataset()
        counts = tag_counts(item.caption for item in ds) if ds is not None else {}
        keep = self.current_tag()
        self.model.set_counts(counts)
        if keep:
            self.select_tag(keep)
        self.summary.setText(f"{len(counts)} distinct tags in {len(ds) if ds is not None else 0} captions.")

    def counts(self) -> dict[str, int]:
        return dict(self.model.rows)

    def show_tokens(self, row: int) -> None:
        ds = self._dataset()
        self.tokens.clear()
        if ds is not None and 0 <= row < len(ds):
            self.tokens.addItems(split_tags(ds[row].caption))

    def current_tag(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return rows[0].data(Qt.UserRole) if rows else None

    def select_tag(self, tag: str) -> None:
        for r in range(self.proxy.rowCount()):
            if self.proxy.index(r, 0).data(Qt.UserRole) == tag:
                self.table.selectRow(r)
                return

    # ------------------------------------------------------------------------------------------- writing
    def _edit(self, rows: list[int], text: str, change: Callable[[str], str]) -> int:
        ds = self._dataset()
        if ds is None:
            return 0
        rows = [i for i in rows if ds[i].caption_source is None or ds[i].caption_readable]

        def operation(rows):
            return ds.set_captions([(i, change(ds[i].caption)) for i in rows])

        n = self.captions.bulk(rows, text, operation)
        self.refresh()
        self.changed.emit(n)
        return n

    def rename(self, old: str, new: str) -> int:
        ds = self._dataset()
        every = list(range(len(ds))) if ds is not None else []
        return self._edit(every, f"Rename tag '{old}' to '{new.strip()}'", lambda c: rename_tag(c, old, new))

    def delete(self, tag: str) -> int:
        ds = self._dataset()
        every = list(range(len(ds))) if ds is not None else []
        return self._edit(every, f"Delete tag '{tag}'", lambda c: remove_tag(c, tag))

    def add(self, tag: str, rows: list[int] | None = None) -> int:
        tag = tag.strip()
        if not tag:
            return 0
        return self._edit(self.selected_rows() if rows is None else rows, f"Add tag '{tag}'",
                          lambda c: add_tag(c, tag))

    def _ask_rename(self) -> None:
        old = self.current_tag()
        if not old:
            return
        new, ok = QInputDialog.getText(self, "Rename tag", f"Rename '{old}' in every caption to:", text=old)
        if ok and new.strip() and new.strip() != old:
            self.rename(old, new)
