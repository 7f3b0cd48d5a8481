"""Bulk caption edits on the selection: trigger token prepend/append, find and replace."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton


class BulkEditPanel(QGroupBox):
    trigger_requested = Signal(str)  # "prepend" | "append"
    replace_requested = Signal()
    editor_requested = Signal()

    def __init__(self, parent=None):
        super().__init__("Edit the selection", parent)
        self.form = QFormLayout(self)
        self.form.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.selection_label = QLabel("No rows selected: edits apply to all rows shown.")
        self.selection_label.setObjectName("hint")
        self.selection_label.setWordWrap(True)
        self.form.addRow(self.selection_label)
        self.trigger = QLineEdit()
        self.trigger.setPlaceholderText("e.g. sks")
        trow = QHBoxLayout()
        pre = QPushButton("Prepend")
        pre.clicked.connect(lambda: self.trigger_requested.emit("prepend"))
        app = QPushButton("Append")
        app.clicked.connect(lambda: self.trigger_requested.emit("append"))
        trow.addWidget(self.trigger, 1)
        trow.addWidget(pre)
        trow.addWidget(app)
        self.form.addRow("Trigger token:", trow)
        self.find = QLineEdit()
        self.replace = QLineEdit()
        self.regex = QCheckBox("Regular expression")
        rrow = QHBoxLayout()
        rbtn = QPushButton("Replace")
        rbtn.clicked.connect(self.replace_requested)
        rrow.addWidget(self.regex)
        rrow.addStretch(1)
        rrow.addWidget(rbtn)
        self.form.addRow("Find:", self.find)
        self.form.addRow("Replace with:", self.replace)
        self.form.addRow("", rrow)
        edit_btn = QPushButton("Edit caption in editor…  (Ctrl+E)")
        edit_btn.clicked.connect(self.editor_requested)
        self.form.addRow("", edit_btn)

    def set_selected(self, n: int) -> None:
        self.selection_label.setText(f"{n} row{'s' if n != 1 else ''} selected." if n else
                                     "No rows selected: edits apply to all rows shown.")
