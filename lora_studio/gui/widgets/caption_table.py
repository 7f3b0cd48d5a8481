"""The caption table view: thumbnails, inline single-line edits, the multi-line editor for the rest."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QStyledItemDelegate, QTableView

from lora_studio.gui.models.caption_model import (COL_BUCKET, COL_CAPTION, COL_FILE, COL_PROBLEMS, COL_SIZE,
                                                  COL_THUMB, THUMB)


class CaptionDelegate(QStyledItemDelegate):
    """Single-line captions edit inline; a multi-line caption opens the multi-line editor instead."""

    open_editor = Signal(object)  # proxy index

    def createEditor(self, parent, option, index):
        if "\n" in (index.data(Qt.EditRole) or "").strip():
            self.open_editor.emit(index)
            return None
        return super().createEditor(parent, option, index)


class CaptionTable(QTableView):
    def __init__(self, model, parent=None):
        super().__init__(parent)
        self.setModel(model)
        self.setSortingEnabled(True)
        self.sortByColumn(-1, Qt.AscendingOrder)
        self.setAlternatingRowColors(True)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed |
                             QAbstractItemView.AnyKeyPressed)
        self.setWordWrap(False)
        self.setIconSize(QSize(THUMB, THUMB))
        vh = self.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.Fixed)  # never measure 1,000 rows
        vh.setDefaultSectionSize(THUMB + 8)
        vh.setVisible(False)
        hh = self.horizontalHeader()
        hh.setSectionResizeMode(COL_THUMB, QHeaderView.Fixed)
        hh.resizeSection(COL_THUMB, THUMB + 12)
        hh.resizeSection(COL_FILE, 150)
        hh.setSectionResizeMode(COL_CAPTION, QHeaderView.Stretch)
        hh.resizeSection(COL_SIZE, 100)
        hh.resizeSection(COL_BUCKET, 100)
        hh.resizeSection(COL_PROBLEMS, 170)
        self.delegate = CaptionDelegate(self)
        self.setItemDelegateForColumn(COL_CAPTION, self.delegate)
