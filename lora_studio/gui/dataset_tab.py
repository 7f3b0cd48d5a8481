"""Dataset tab: the caption table, search, bulk edits with undo, and the folder check."""

from __future__ import annotations

import os

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (QCheckBox, QDialog, QFileDialog, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QMessageBox, QPushButton, QSplitter, QVBoxLayout, QWidget)

from lora_studio.gui import caption_dialog, workers
from lora_studio.gui.dialogs.caption_editor import CaptionEditor
from lora_studio.gui.models.caption_model import COL_CAPTION, CaptionFilter, CaptionTableModel
from lora_studio.gui.widgets.bulk_edit import BulkEditPanel
from lora_studio.gui.widgets.caption_table import CaptionTable
from lora_studio.gui.widgets.elided_label import ElidedLabel
from lora_studio.gui.widgets.folder_check import FolderCheckPanel


class DatasetTab(QWidget):
    dataset_opened = Signal(str, int)  # path, number of images
    status = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = CaptionTableModel(self)
        self.proxy = CaptionFilter(self)
        self.proxy.setSourceModel(self.model)
        self.model.error.connect(self._error)
        self.job: workers.JobThread | None = None
        self._stopping: set = set()  # scans asked to stop, kept until their threads end
        self.last_dialog = None
        self.path: str | None = None
        self.mode = "style"  # the run's mode decides whether a missing caption stops Start (set by MainWindow)
        self.setAcceptDrops(True)
        self._build()
        # counters follow every caption change (inline edits, the editor, undo), at most once per event-loop pass
        self._summary_timer = QTimer(self)
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(0)
        self._summary_timer.timeout.connect(self._update_summary)
        self.model.dataChanged.connect(self._data_changed)

    # ------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.setSpacing(8)
        outer.addLayout(self._build_top())
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self._build_table())
        side = QWidget()
        slay = QVBoxLayout(side)
        slay.setContentsMargins(6, 0, 0, 0)
        slay.setSpacing(8)
        self.bulk = BulkEditPanel()
        self.bulk.trigger_requested.connect(self.add_trigger)
        self.bulk.replace_requested.connect(self.find_replace)
        self.bulk.editor_requested.connect(lambda: self.edit_multiline(self.table.currentIndex()))
        self.trigger, self.find, self.replace, self.regex = (self.bulk.trigger, self.bulk.find, self.bulk.replace,
                                                             self.bulk.regex)
        slay.addWidget(self.bulk)
        self.folder_check = FolderCheckPanel()
        self.problem_list = self.folder_check.problem_list
        slay.addWidget(self.folder_check, 1)
        split.addWidget(side)
        split.setStretchFactor(0, 1)
        split.setSizes([900, 420])
        outer.addWidget(split, 1)

    def _build_top(self) -> QHBoxLayout:
        top = QHBoxLayout()
        open_btn = QPushButton("Open folder…")
        open_btn.setObjectName("primary")
        open_btn.clicked.connect(self._pick_folder)
        self.path_label = ElidedLabel("Open a folder of images, or drop one here.")
        self.path_label.setObjectName("hint")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search file names and captions…")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(260)
        self.search.textChanged.connect(self.proxy.set_text)
        self.problems_only = QCheckBox("Problems only")
        self.problems_only.toggled.connect(self.proxy.set_problems_only)
        self.undo_btn = QPushButton("Undo")
        self.redo_btn = QPushButton("Redo")
        stack = self.model.undo_stack
        self.undo_btn.clicked.connect(stack.undo)
        self.redo_btn.clicked.connect(stack.redo)
        stack.canUndoChanged.connect(self.undo_btn.setEnabled)
        stack.canRedoChanged.connect(self.redo_btn.setEnabled)
        stack.undoTextChanged.connect(lambda t: self.undo_btn.setToolTip(f"Undo {t}" if t else "Nothing to undo"))
        stack.redoTextChanged.connect(lambda t: self.redo_btn.setToolTip(f"Redo {t}" if t else "Nothing to redo"))
        self.undo_btn.setEnabled(False)
        self.redo_btn.setEnabled(False)
        self.caption_tools = caption_dialog.CaptionTools(self)  # Caption… and Tags…
        for w, stretch in ((open_btn, 0), (self.path_label, 1), (self.search, 0), (self.problems_only, 0),
                           (self.caption_tools, 0), (self.undo_btn, 0), (self.redo_btn, 0)):
            top.addWidget(w, stretch)
        return top

    def _build_table(self) -> QGroupBox:
        box = QGroupBox("Images and captions")
        lay = QVBoxLayout(box)
        self.table = CaptionTable(self.proxy)
        self.delegate = self.table.delegate
        self.delegate.open_editor.connect(self.edit_multiline)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        QShortcut(QKeySequence("Ctrl+E"), self.table, activated=lambda: self.edit_multiline(self.table.currentIndex()))
        lay.addWidget(self.table, 1)
        self.summary = QLabel("")
        self.summary.setObjectName("hint")
        lay.addWidget(self.summary)
        return box

    # -------------------------------------------------------------------------------------------- open
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        for url in event.mimeData().urls():
            path = url.toLocalFile()
            if os.path.isdir(path):
                self.open_folder(path)
                return

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a dataset folder", self.path or "")
        if path:
            self.open_folder(path)

    def open_folder(self, path: str) -> None:
        """Scan the folder off the GUI thread; the table fills when the scan is done."""
        if self.job is not None and self.job.isRunning():
            # Keep the stopping scan alive until its thread ends: a QThread destroyed while running aborts the app.
            old = self.job
            old.request_stop()
            old.result.disconnect()  # a late result of the old folder must not replace the new one
            self._stopping.add(old)
            old.finished.connect(lambda o=old: self._stopping.discard(o))
        self.path_label.setText(f"Opening {path}…")
        self.job = workers.open_dataset_job(str(path), self.model.buckets())
        self.job.result.connect(lambda ds, p=str(path): self.set_dataset(ds, p))
        self.job.error.connect(self._error)
        self.job.start()

    def set_dataset(self, dataset, path: str) -> None:
        self.path = path
        self.model.set_dataset(dataset)
        self.path_label.setText(os.path.abspath(path))
        self._update_summary()
        self.dataset_opened.emit(path, len(dataset.items))
        self.status.emit(f"Opened {path}: {len(dataset.items)} images.")

    def reopen(self) -> None:
        if self.path:
            self.open_folder(self.path)

    def _data_changed(self, top_left, bottom_right, *_) -> None:
        if top_left.column() <= COL_CAPTION <= bottom_right.column():  # not a thumbnail arriving
            self._summary_timer.start()

    def set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self._update_summary()

    def uncaptioned(self) -> list:
        """Images that Start refuses in a style run (Dataset.uncaptioned, the test preflight uses)."""
        ds = self.model.dataset
        return [] if ds is None or self.mode != "style" else ds.uncaptioned()

    def _update_summary(self) -> None:
        from lora_studio.core.dataset import ERROR, Problem

        ds = self.model.dataset
        if ds is None:
            return
        n = len(ds.items)
        captioned = sum(1 for it in ds.items if it.has_caption)
        missing = [Problem(ERROR, "missing_caption", item.name, "has no caption: Start refuses it in a style run",
                           "write a caption, or train DreamBooth (mode 'dreambooth') with an instance prompt",
                           "caption") for item in self.uncaptioned()]
        problems = missing + ds.all_problems()
        errors = sum(1 for p in problems if p.severity == "error")
        self.summary.setText(f"{n} images · {captioned} captioned · {errors} errors · "
                             f"{len(problems) - errors} warnings · captions are saved as you type")
        self.folder_check.show_problems(problems)

    # ------------------------------------------------------------------------------------------- edits
    def selected_rows(self) -> list[int]:
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        if not rows:  # nothing selected: every row the filter shows
            rows = {self.proxy.mapToSource(self.proxy.index(r, 0)).row() for r in range(self.proxy.rowCount())}
        return sorted(rows)

    def _selection_changed(self) -> None:
        self.bulk.set_selected(len(self.table.selectionModel().selectedRows()))

    def add_trigger(self, where: str) -> int:
        ds = self.model.dataset
        if ds is None:
            return 0
        token = self.trigger.text()
        n = self.model.bulk(self.selected_rows(), f"{where.capitalize()} '{token}'",
                            lambda rows: ds.add_trigger(token, where=where, items=rows))
        self.status.emit(f"Trigger token '{token}' added to {n} captions.")
        self._update_summary()
        return n

    def find_replace(self) -> int:
        ds = self.model.dataset
        if ds is None:
            return 0
        find, repl, regex = self.find.text(), self.replace.text(), self.regex.isChecked()
        n = self.model.bulk(self.selected_rows(), f"Replace '{find}'",
                            lambda rows: ds.find_replace(find, repl, items=rows, regex=regex))
        self.status.emit(f"Replaced in {n} captions.")
        self._update_summary()
        return n

    def edit_multiline(self, proxy_index) -> None:
        if not proxy_index.isValid() or self.model.dataset is None:
            return
        src = self.proxy.mapToSource(proxy_index)
        item = self.model.dataset.items[src.row()]
        dlg = CaptionEditor(item.name, item.caption, QPixmap(str(item.path)), self)
        self.last_dialog = dlg

        def done(code: int) -> None:
            if code == QDialog.Accepted:
                self.model.setData(self.model.index(src.row(), COL_CAPTION), dlg.text())
        dlg.finished.connect(done)
        dlg.open()

    def _error(self, message: str, advice: str) -> None:
        self.path_label.setText(self.path or "No folder open.")
        box = QMessageBox(QMessageBox.Warning, "Dataset", message, QMessageBox.Ok, self)
        if advice:
            box.setInformativeText(f"What to do: {advice}")
        self.last_dialog = box
        box.open()

    def shutdown(self) -> None:
        self.caption_tools.shutdown()
        self.model.shutdown()
        if self.job is not None and self.job.isRunning():
            self.job.request_stop()
            self.job.wait(5000)
