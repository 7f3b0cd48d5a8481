"""Training on several GPUs from the Training tab: the "GPUs" choice and the job that runs the launcher.

The job runs ``core.training.launch.train_processes`` on a JobThread: rank 0's events arrive as the same typed
events an in-process run emits (plot, meter, samples, Finished), and Stop asks every rank to stop at one step.
"""

from __future__ import annotations

import os

from PySide6.QtWidgets import QHBoxLayout, QLabel, QSpinBox, QWidget

from lora_studio.gui import workers

# "N" offers N processes whatever the machine has: CPU processes (gloo) where there is no GPU (tests, CI).
FORCE_ENV = "LORA_STUDIO_PROCESSES"


def max_processes(info: dict) -> int:
    forced = os.environ.get(FORCE_ENV, "").strip()
    if forced.isdigit():
        return max(1, int(forced))
    return max(1, int(info.get("count") or 1)) if info.get("cuda") else 1


class ProcessesChoice(QWidget):
    """How many GPUs (one training process each); shown only where there is a choice."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel("GPUs:")
        self.spin = QSpinBox()
        self.spin.setRange(1, 1)
        self.spin.setToolTip("Train data-parallel, one process per GPU. Each GPU holds the whole model, so the "
                             "preset and the memory meter are per GPU; the batch size is per GPU too (the run "
                             "sees GPUs × batch size images per step).")
        self.hint = QLabel()
        self.hint.setObjectName("hint")
        lay.addWidget(self.label)
        lay.addWidget(self.spin)
        lay.addWidget(self.hint, 1)
        self.setVisible(False)

    def set_gpu(self, info: dict) -> None:
        most = max_processes(info)
        self.spin.setRange(1, most)
        self.spin.setValue(most)
        where = "GPUs" if info.get("cuda") else "CPU processes"
        self.hint.setText(f"up to {most} {where}; memory and presets are per GPU")
        self.setVisible(most > 1)

    def value(self) -> int:
        return 1 if self.isHidden() else self.spin.value()


def launch_job(config, processes: int, resume: bool = False) -> workers.JobThread:
    """``processes`` ranks through accelerate, launched by the app; rank 0 writes ``<output_dir>/events.jsonl``
    (what File > Open finished run reads), which this job tails."""

    def fn(emit, stop):
        from lora_studio.core.training.launch import train_processes

        os.makedirs(config.output_dir, exist_ok=True)
        path = os.path.join(config.output_dir, workers.EVENTS_FILE)
        if not resume and os.path.exists(path):
            os.remove(path)
        return train_processes(config, emit, stop, processes=processes, resume=resume, events_path=path)

    return workers.JobThread(fn)
