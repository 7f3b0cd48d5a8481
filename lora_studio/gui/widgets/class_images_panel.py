"""Generate the DreamBooth class images now (what training would do first) and review them.

Lives in the training form's DreamBooth group: the prompts and folder it uses are the run config's own fields.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QWidget

from lora_studio.core import events as ev
from lora_studio.gui import workers
from lora_studio.gui.dialogs.class_images import ClassImagesReview


class ClassImagesPanel(QWidget):
    error = Signal(str, str)

    def __init__(self, config_provider, parent=None):
        super().__init__(parent)
        self.config_provider = config_provider  # returns the current TrainingConfig (raises ConfigError)
        self.job: workers.JobThread | None = None
        self.last_dialog = None
        self.folder = ""
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.gen_btn = QPushButton("Generate class images")
        self.gen_btn.clicked.connect(self.generate)
        review = QPushButton("Review…")
        review.clicked.connect(self.review)
        lay.addWidget(self.gen_btn, 1)
        lay.addWidget(review)

    def set_ready(self, ready: bool) -> None:
        """Disabled until the app's heavy imports are done (see workers.warm_imports)."""
        running = self.job is not None and self.job.isRunning()
        self.gen_btn.setEnabled(ready and not running)

    def generate(self) -> None:
        if self.job is not None and self.job.isRunning():
            return
        try:
            cfg = self.config_provider()
        except Exception as exc:  # noqa: BLE001 - a ConfigError names the field to fix
            from lora_studio.errors import describe

            self.error.emit(*describe(exc))
            return
        if not cfg.class_prompt.strip() or not cfg.class_data_dir.strip():
            self.error.emit("Class prompt and class images folder are needed to generate class images.",
                            "fill in both fields in the DreamBooth group.")
            return
        self.folder = cfg.class_data_dir
        self.gen_btn.setEnabled(False)
        self.gen_btn.setText("Generating…")
        self.job = workers.class_images_job(cfg)
        self.job.event.connect(self._event)
        self.job.result.connect(lambda _: self._done(True))
        self.job.error.connect(lambda m, a: (self._done(False), self.error.emit(m, a)))
        self.job.start()

    def _event(self, e) -> None:
        if isinstance(e, ev.Progress):
            self.gen_btn.setText(f"Generating {e.step}/{e.total}…")

    def _done(self, ok: bool) -> None:
        self.gen_btn.setEnabled(True)
        self.gen_btn.setText("Generate class images")
        if ok:
            self.review()

    def review(self) -> None:
        folder = self.folder
        try:
            folder = self.config_provider().class_data_dir.strip() or folder
        except Exception:  # noqa: BLE001 - an unrelated bad field must not hide the review
            pass
        if not folder:
            self.error.emit("No class images folder set.", "choose a folder in the DreamBooth group.")
            return
        dlg = ClassImagesReview(folder, self)
        self.last_dialog = dlg
        dlg.open()

    def shutdown(self) -> None:
        if self.job is not None and self.job.isRunning():
            self.job.request_stop()
            self.job.wait(5000)
