"""Dataset tab: the caption table, search, bulk edits with undo, and DreamBooth settings."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QMessageBox, QPlainTextEdit, QPushButton, QSpinBox, QSplitter,
                               QStyledItemDelegate, QTableView, QVBoxLayout, QWidget)

from lora_studio.gui import caption_dialog, workers
from lora_studio.gui.models.caption_model import (COL_BUCKET, COL_CAPTION, COL_FILE, COL_PROBLEMS, COL_SIZE,
                                                  COL_THUMB, THUMB, CaptionFilter, CaptionTableModel)
from lora_studio.gui.widgets.config_form import PathEdit


class CaptionDialog(QDialog):
    """A roomy multi-line caption editor (Ctrl+Enter saves)."""

    def __init__(self, name: str, text: str, pixmap: QPixmap | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Caption — {name}")
        self.resize(640, 360)
        lay = QHBoxLayout(self)
        if pixmap is not None and not pixmap.isNull():
            img = QLabel()
            img.setPixmap(pixmap.scaled(240, 240, Qt.KeepAspectRatio, Qt.SmoothTransformation))
            img.setAlignment(Qt.AlignTop)
            lay.addWidget(img)
        right = QVBoxLayout()
        self.edit = QPlainTextEdit(text)
        right.addWidget(self.edit, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        right.addWidget(buttons)
        lay.addLayout(right, 1)
        QShortcut(QKeySequence("Ctrl+Return"), self, activated=self.accept)

    def text(self) -> str:
        return self.edit.toPlainText()


class CaptionDelegate(QStyledItemDelegate):
    """Single-line captions edit inline; a multi-line caption opens the multi-line editor instead."""

    open_editor = Signal(object)  # proxy index

    def createEditor(self, parent, option, index):
        if "\n" in (index.data(Qt.EditRole) or "").strip():
            self.open_editor.emit(index)
            return None
        return super().createEditor(parent, option, index)


class ClassImagesReview(QDialog):
    """Grid of generated class images; delete the ones that came out wrong."""

    def __init__(self, folder: str, parent=None):
        super().__init__(parent)
        self.folder = Path(folder)
        self.setWindowTitle(f"Review class images — {self.folder}")
        self.resize(760, 560)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Select images that do not show the class well, then delete them. "
                             "Missing ones are generated again before training."))
        self.grid = QListWidget()
        self.grid.setViewMode(QListWidget.IconMode)
        self.grid.setIconSize(QSize(128, 128))
        self.grid.setResizeMode(QListWidget.Adjust)
        self.grid.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.grid.setMovement(QListWidget.Static)
        self.grid.setSpacing(6)
        lay.addWidget(self.grid, 1)
        row = QHBoxLayout()
        self.count = QLabel()
        delete = QPushButton("Delete selected")
        delete.setObjectName("danger")
        delete.clicked.connect(self.delete_selected)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        row.addWidget(self.count)
        row.addStretch(1)
        row.addWidget(delete)
        row.addWidget(close)
        lay.addLayout(row)
        self.reload()

    def reload(self) -> None:
        from lora_studio.core.dataset import scan

        self.grid.clear()
        paths = scan(self.folder) if self.folder.is_dir() else []
        for p in paths:
            item = QListWidgetItem(QIcon(QPixmap(str(p))), p.name)
            item.setData(Qt.UserRole, str(p))
            self.grid.addItem(item)
        self.count.setText(f"{len(paths)} class images")

    def delete_selected(self) -> int:
        items = self.grid.selectedItems()
        for item in items:
            try:
                os.remove(item.data(Qt.UserRole))
            except OSError:
                pass
        self.reload()
        return len(items)


class DatasetTab(QWidget):
    dataset_opened = Signal(str, int)  # path, number of images
    dreambooth_changed = Signal(dict)  # config values edited here
    status = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = CaptionTableModel(self)
        self.proxy = CaptionFilter(self)
        self.proxy.setSourceModel(self.model)
        self.model.error.connect(self._error)
        self.job: workers.JobThread | None = None
        self.class_job: workers.JobThread | None = None
        self.last_dialog = None
        self.path: str | None = None
        self.config_provider = None  # set by the main window: returns the current TrainingConfig
        self._syncing = False
        self.setAcceptDrops(True)
        self._build()

    # ------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.setSpacing(8)
        top = QHBoxLayout()
        open_btn = QPushButton("Open folder…")
        open_btn.setObjectName("primary")
        open_btn.clicked.connect(self._pick_folder)
        self.path_label = QLabel("Open a folder of images, or drop one here.")
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
        top.addWidget(open_btn)
        top.addWidget(self.path_label, 1)
        top.addWidget(self.search)
        top.addWidget(self.problems_only)
        self.caption_tools = caption_dialog.CaptionTools(self)  # Caption… and Tags…
        top.addWidget(self.caption_tools)
        top.addWidget(self.undo_btn)
        top.addWidget(self.redo_btn)
        outer.addLayout(top)

        split = QSplitter(Qt.Horizontal)
        table_box = QGroupBox("Images and captions")
        tlay = QVBoxLayout(table_box)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.AscendingOrder)
        self.table.setAlternatingRowColors(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed |
                                   QAbstractItemView.AnyKeyPressed)
        self.table.setWordWrap(False)
        self.table.setIconSize(QSize(THUMB, THUMB))
        vh = self.table.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.Fixed)  # never measure 1,000 rows
        vh.setDefaultSectionSize(THUMB + 8)
        vh.setVisible(False)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(COL_THUMB, QHeaderView.Fixed)
        hh.resizeSection(COL_THUMB, THUMB + 12)
        hh.resizeSection(COL_FILE, 150)
        hh.setSectionResizeMode(COL_CAPTION, QHeaderView.Stretch)
        hh.resizeSection(COL_SIZE, 100)
        hh.resizeSection(COL_BUCKET, 100)
        hh.resizeSection(COL_PROBLEMS, 170)
        self.delegate = CaptionDelegate(self.table)
        self.delegate.open_editor.connect(self.edit_multiline)
        self.table.setItemDelegateForColumn(COL_CAPTION, self.delegate)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        QShortcut(QKeySequence("Ctrl+E"), self.table, activated=lambda: self.edit_multiline(self.table.currentIndex()))
        tlay.addWidget(self.table, 1)
        self.summary = QLabel("")
        self.summary.setObjectName("hint")
        tlay.addWidget(self.summary)
        split.addWidget(table_box)

        side = QWidget()
        slay = QVBoxLayout(side)
        slay.setContentsMargins(6, 0, 0, 0)
        slay.setSpacing(8)
        bulk_box = QGroupBox("Edit the selection")
        blay = QFormLayout(bulk_box)
        blay.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.selection_label = QLabel("No rows selected: edits apply to all rows shown.")
        self.selection_label.setObjectName("hint")
        self.selection_label.setWordWrap(True)
        blay.addRow(self.selection_label)
        self.trigger = QLineEdit()
        self.trigger.setPlaceholderText("e.g. sks")
        trow = QHBoxLayout()
        pre = QPushButton("Prepend")
        pre.clicked.connect(lambda: self.add_trigger("prepend"))
        app = QPushButton("Append")
        app.clicked.connect(lambda: self.add_trigger("append"))
        trow.addWidget(self.trigger, 1)
        trow.addWidget(pre)
        trow.addWidget(app)
        blay.addRow("Trigger token:", trow)
        self.find = QLineEdit()
        self.replace = QLineEdit()
        self.regex = QCheckBox("Regular expression")
        rrow = QHBoxLayout()
        rbtn = QPushButton("Replace")
        rbtn.clicked.connect(self.find_replace)
        rrow.addWidget(self.regex)
        rrow.addStretch(1)
        rrow.addWidget(rbtn)
        blay.addRow("Find:", self.find)
        blay.addRow("Replace with:", self.replace)
        blay.addRow("", rrow)
        edit_btn = QPushButton("Edit caption in editor…  (Ctrl+E)")
        edit_btn.clicked.connect(lambda: self.edit_multiline(self.table.currentIndex()))
        blay.addRow("", edit_btn)
        slay.addWidget(bulk_box)

        db_box = QGroupBox("DreamBooth")
        dlay = QFormLayout(db_box)
        dlay.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.instance_prompt = QLineEdit()
        self.instance_prompt.setPlaceholderText("a photo of sks toy")
        self.instance_prompt.setToolTip("The prompt with a rare token that names your subject (instance_prompt).")
        self.class_prompt = QLineEdit()
        self.class_prompt.setPlaceholderText("a photo of a toy")
        self.class_prompt.setToolTip("The same prompt without the token (class_prompt), for prior preservation.")
        self.class_dir = PathEdit("dir")
        self.class_dir.setToolTip("Folder of class images (class_data_dir); missing ones are generated.")
        self.num_class = QSpinBox()
        self.num_class.setRange(1, 100000)
        self.num_class.setValue(100)
        self.prior = QCheckBox("Use prior preservation")
        dlay.addRow("Instance prompt:", self.instance_prompt)
        dlay.addRow("Class prompt:", self.class_prompt)
        dlay.addRow("Class images:", self.class_dir)
        dlay.addRow("How many:", self.num_class)
        dlay.addRow("", self.prior)
        crow = QHBoxLayout()
        self.gen_class_btn = QPushButton("Generate class images")
        self.gen_class_btn.clicked.connect(self.generate_class_images)
        review = QPushButton("Review…")
        review.clicked.connect(self.review_class_images)
        crow.addWidget(self.gen_class_btn, 1)
        crow.addWidget(review)
        dlay.addRow("", crow)
        for w in (self.instance_prompt, self.class_prompt):
            w.textChanged.connect(self._db_edited)
        self.class_dir.changed.connect(self._db_edited)
        self.num_class.valueChanged.connect(self._db_edited)
        self.prior.toggled.connect(self._db_edited)
        slay.addWidget(db_box)

        prob_box = QGroupBox("Folder check")
        play = QVBoxLayout(prob_box)
        self.problem_list = QListWidget()
        self.problem_list.setWordWrap(True)
        play.addWidget(self.problem_list)
        slay.addWidget(prob_box, 1)
        split.addWidget(side)
        split.setStretchFactor(0, 1)
        split.setSizes([900, 420])
        outer.addWidget(split, 1)

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
            self.job.request_stop()
        self.path_label.setText(f"Opening {path}…")
        self.job = workers.open_dataset_job(str(path), self.model.buckets())
        self.job.result.connect(lambda ds, p=str(path): self.set_dataset(ds, p))
        self.job.error.connect(self._error)
        self.job.start()

    def set_dataset(self, dataset, path: str) -> None:
        self.path = path
        self.model.set_dataset(dataset)
        self.path_label.setText(path)
        self.path_label.setToolTip(path)
        self._update_summary()
        self.dataset_opened.emit(path, len(dataset.items))
        self.status.emit(f"Opened {path}: {len(dataset.items)} images.")

    def reopen(self) -> None:
        if self.path:
            self.open_folder(self.path)

    def _update_summary(self) -> None:
        ds = self.model.dataset
        if ds is None:
            return
        n = len(ds.items)
        captioned = sum(1 for it in ds.items if it.has_caption)
        problems = ds.all_problems()
        errors = sum(1 for p in problems if p.severity == "error")
        self.summary.setText(f"{n} images · {captioned} captioned · {errors} errors · "
                             f"{len(problems) - errors} warnings · captions are saved as you type")
        self.problem_list.clear()
        if not problems:
            self.problem_list.addItem("No problems found.")
        for p in problems[:500]:
            item = QListWidgetItem(f"{p.file or '.'}: {p.message}")
            item.setToolTip(p.advice)
            item.setForeground(Qt.red if p.severity == "error" else Qt.darkYellow)
            self.problem_list.addItem(item)

    # ------------------------------------------------------------------------------------------- edits
    def selected_rows(self) -> list[int]:
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        if not rows:  # nothing selected: every row the filter shows
            rows = {self.proxy.mapToSource(self.proxy.index(r, 0)).row() for r in range(self.proxy.rowCount())}
        return sorted(rows)

    def _selection_changed(self) -> None:
        n = len(self.table.selectionModel().selectedRows())
        self.selection_label.setText(f"{n} row{'s' if n != 1 else ''} selected." if n else
                                     "No rows selected: edits apply to all rows shown.")

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
        dlg = CaptionDialog(item.name, item.caption, QPixmap(str(item.path)), self)
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

    # --------------------------------------------------------------------------------------- DreamBooth
    def dreambooth_values(self) -> dict:
        has_instance = bool(self.instance_prompt.text().strip())
        return dict(instance_prompt=self.instance_prompt.text(), class_prompt=self.class_prompt.text(),
                    class_data_dir=self.class_dir.text(), num_class_images=self.num_class.value(),
                    with_prior_preservation=self.prior.isChecked(),
                    mode="dreambooth" if has_instance else "style")

    def set_dreambooth_values(self, values: dict) -> None:
        self._syncing = True
        try:
            self.instance_prompt.setText(values.get("instance_prompt", ""))
            self.class_prompt.setText(values.get("class_prompt", ""))
            self.class_dir.setText(values.get("class_data_dir", ""))
            self.num_class.setValue(int(values.get("num_class_images", 100)))
            self.prior.setChecked(bool(values.get("with_prior_preservation", False)))
        finally:
            self._syncing = False

    def _db_edited(self, *_) -> None:
        if not self._syncing:
            self.dreambooth_changed.emit(self.dreambooth_values())

    def generate_class_images(self) -> None:
        if self.config_provider is None or (self.class_job is not None and self.class_job.isRunning()):
            return
        try:
            cfg = self.config_provider()
        except Exception as exc:  # noqa: BLE001
            from lora_studio.errors import describe

            self._error(*describe(exc))
            return
        if not cfg.class_prompt.strip() or not cfg.class_data_dir.strip():
            self._error("Class prompt and class images folder are needed to generate class images.",
                        "fill in both fields above.")
            return
        self.gen_class_btn.setEnabled(False)
        self.gen_class_btn.setText("Generating…")
        self.class_job = workers.class_images_job(cfg)
        self.class_job.event.connect(self._class_event)
        self.class_job.result.connect(lambda _: self._class_done())
        self.class_job.error.connect(lambda m, a: (self._class_done(), self._error(m, a)))
        self.class_job.start()

    def _class_event(self, e) -> None:
        from lora_studio.core import events as ev

        if isinstance(e, ev.Progress):
            self.gen_class_btn.setText(f"Generating {e.step}/{e.total}…")

    def _class_done(self) -> None:
        self.gen_class_btn.setEnabled(True)
        self.gen_class_btn.setText("Generate class images")
        if self.class_dir.text():
            self.review_class_images()

    def review_class_images(self) -> None:
        folder = self.class_dir.text().strip()
        if not folder:
            self._error("No class images folder set.", "choose a folder above.")
            return
        dlg = ClassImagesReview(folder, self)
        self.last_dialog = dlg
        dlg.open()

    def shutdown(self) -> None:
        self.caption_tools.shutdown()
        self.model.shutdown()
        for job in (self.job, self.class_job):
            if job is not None and job.isRunning():
                job.request_stop()
                job.wait(5000)
