"""Captioning from the Dataset tab: the Caption… dialog (worker thread, progress, cancel, one undo step)
and the Tags… window (the tag view beside the caption table)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QVBoxLayout, QWidget)

from lora_studio.core import events as ev
from lora_studio.core.caption.base import MODES
from lora_studio.gui import workers
from lora_studio.gui.widgets.tag_view import TagView

SUGGESTED_MODELS = ["demo", "Salesforce/blip-image-captioning-large", "Salesforce/blip2-opt-2.7b",
                    "SmilingWolf/wd-vit-tagger-v3", "SmilingWolf/wd-v1-4-moat-tagger-v2"]
MODE_HELP = {"empty": "only images without a caption", "overwrite": "replace every caption",
             "append": "add the draft after the caption", "prepend": "add the draft before the caption"}


class CaptionRunDialog(QDialog):
    """Draft captions with a model on a worker thread; the result lands as ONE undo step of the caption table."""

    done = Signal(int)  # captions written

    def __init__(self, tab, parent=None):
        super().__init__(parent or tab)
        self.tab = tab
        self.job: workers.JobThread | None = None
        self.written = 0
        self.setWindowTitle("Caption images")
        self.resize(560, 300)
        self._build()

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems(SUGGESTED_MODELS)
        self.model.setToolTip("demo, a model folder (BLIP / BLIP-2 / Florence-2, or a tagger with model.onnx and "
                              "selected_tags.csv), or a Hugging Face repo id (downloaded once, then cached).")
        browse = QPushButton("Folder…")
        browse.clicked.connect(self._browse)
        mrow = QHBoxLayout()
        mrow.addWidget(self.model, 1)
        mrow.addWidget(browse)
        form.addRow("Model:", mrow)
        self.mode = QComboBox()
        for mode in MODES:
            self.mode.addItem(f"{mode}: {MODE_HELP[mode]}", mode)
        form.addRow("Mode:", self.mode)
        self.trigger = QLineEdit(self.tab.trigger.text())
        self.trigger.setPlaceholderText("e.g. sks (put first in every caption that lacks it)")
        form.addRow("Trigger word:", self.trigger)
        self.general = self._spin(0.35, "Taggers: lowest probability of a general tag.")
        self.character = self._spin(0.85, "Taggers: lowest probability of a character tag.")
        trow = QHBoxLayout()
        trow.addWidget(QLabel("general"))
        trow.addWidget(self.general)
        trow.addWidget(QLabel("character"))
        trow.addWidget(self.character)
        form.addRow("Tag thresholds:", trow)
        self.selected_only = QCheckBox("Only the selected rows")
        self.selected_only.setChecked(bool(self.tab.table.selectionModel().selectedRows()))
        form.addRow("", self.selected_only)
        lay.addLayout(form)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("Captions are written when drafting ends; Undo takes them all back.")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        buttons = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.start_btn.setObjectName("primary")
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons.addStretch(1)
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.cancel_btn)
        buttons.addWidget(close)
        lay.addLayout(buttons)

    @staticmethod
    def _spin(value: float, tip: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(0.0, 1.0)
        spin.setSingleStep(0.05)
        spin.setValue(value)
        spin.setToolTip(tip)
        return spin

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "A captioning model folder")
        if path:
            self.model.setCurrentText(path)

    # --------------------------------------------------------------------------------------------- job
    def is_running(self) -> bool:
        return self.job is not None and self.job.isRunning()

    def start(self) -> bool:
        from lora_studio.core.caption import draft_all, scope, to_draft

        ds = self.tab.model.dataset
        if ds is None or self.is_running():
            return False
        rows = self.tab.selected_rows() if self.selected_only.isChecked() else None
        mode, model = self.mode.currentData(), self.model.currentText().strip()
        options = dict(general_threshold=self.general.value(), character_threshold=self.character.value())
        self._run = dict(ds=ds, mode=mode, model=model, trigger=self.trigger.text().strip(), scope=scope(ds, rows))
        indices = to_draft(ds, mode, rows)
        self.job = workers.JobThread(lambda emit, stop: draft_all(ds, model, indices, emit, stop, **options))
        self.job.event.connect(self._event)
        self.job.result.connect(self._apply)
        self.job.error.connect(self._failed)
        self.job.finished.connect(lambda: self._running(False))
        self.progress.setRange(0, max(1, len(indices)))
        self.progress.setValue(0)
        self.status.setText(f"Loading {model}…")
        self._running(True)
        self.job.start()
        return True

    def cancel(self) -> None:
        if self.is_running():
            self.job.request_stop()
            self.status.setText("Stopping after this batch; what was drafted is kept…")

    def _running(self, on: bool) -> None:
        self.start_btn.setEnabled(not on)
        self.cancel_btn.setEnabled(on)

    def _event(self, e) -> None:
        if isinstance(e, ev.Progress):
            self.progress.setValue(e.step)
            self.status.setText(f"Drafted {e.step} of {e.total} ({e.it_per_s or 0:.1f} images/s).")
        elif isinstance(e, ev.Warning):
            self.status.setText(e.msg)

    def _apply(self, drafts: dict) -> None:
        from lora_studio.core.caption import plan

        run = self._run
        if self.tab.model.dataset is not run["ds"]:  # another folder was opened meanwhile
            self.status.setText("The dataset was reopened while drafting; nothing was written.")
            return
        stopped = self.job is not None and self.job.stop_requested()
        items = sorted(drafts) if stopped else run["scope"]
        changes = plan(run["ds"], drafts, run["mode"], run["trigger"], items)
        if changes and not self.tab.model.apply(changes, f"Caption {len(changes)} images with {run['model']}"):
            return
        self.written = len(changes)
        self.tab._update_summary()
        self.status.setText(("Stopped: " if stopped else "") + f"{len(changes)} captions written "
                            f"({len(drafts)} drafted). Undo takes them all back.")
        self.done.emit(len(changes))

    def _failed(self, message: str, advice: str) -> None:
        self.status.setText(message + (f" What to do: {advice}" if advice else ""))

    def closeEvent(self, event) -> None:
        self.cancel()
        super().closeEvent(event)


class TagDialog(QDialog):
    """The tag view in its own window, following the Dataset tab's current row."""

    def __init__(self, tab, parent=None):
        super().__init__(parent or tab)
        self.setWindowTitle("Tags")
        self.resize(420, 560)
        self.view = TagView(tab.model, tab.selected_rows, self)
        QVBoxLayout(self).addWidget(self.view)
        self.tab = tab
        tab.table.selectionModel().currentRowChanged.connect(self._current)

    def _current(self, current, _previous) -> None:
        if current.isValid():
            self.view.show_tokens(self.tab.proxy.mapToSource(current).row())


class CaptionTools(QWidget):
    """The Dataset tab's Caption… and Tags… buttons."""

    def __init__(self, tab):
        super().__init__(tab)
        self.tab = tab
        self.run_dialog: CaptionRunDialog | None = None
        self.tag_dialog: TagDialog | None = None
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.caption_btn = QPushButton("Caption…")
        self.caption_btn.setToolTip("Draft captions with a captioning model (BLIP, a WD14 tagger, or the demo).")
        self.caption_btn.clicked.connect(self.open_caption)
        self.tags_btn = QPushButton("Tags…")
        self.tags_btn.setToolTip("Comma tags of every caption: counts, rename, delete, add to the selection.")
        self.tags_btn.clicked.connect(self.open_tags)
        lay.addWidget(self.caption_btn)
        lay.addWidget(self.tags_btn)

    def open_caption(self) -> CaptionRunDialog | None:
        if self.tab.model.dataset is None:
            self.tab._error("Open a dataset folder first.", "use Open folder… or drop a folder here.")
            return None
        if self.run_dialog is None or not self.run_dialog.is_running():
            self.run_dialog = CaptionRunDialog(self.tab)
        self.run_dialog.show()
        return self.run_dialog

    def open_tags(self) -> TagDialog:
        if self.tag_dialog is None:
            self.tag_dialog = TagDialog(self.tab)
        self.tag_dialog.view.refresh()
        self.tag_dialog.show()
        return self.tag_dialog

    def shutdown(self) -> None:
        if self.run_dialog is not None and self.run_dialog.is_running():
            self.run_dialog.job.request_stop()
            self.run_dialog.job.wait(10000)
