"""Before Start: when captions lack the run's trigger word, say how many and offer to add it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from lora_studio.core.dataset import trigger


def _open_dataset_tab(parent, folder: str):
    """The Dataset tab when it shows this very folder: adding through it makes the edit undoable there."""
    tab = getattr(parent.window(), "dataset_tab", None)
    ds = getattr(getattr(tab, "model", None), "dataset", None)
    if ds is not None and Path(ds.root) == Path(folder).absolute():
        return tab
    return None


def add_missing(parent, config, found: trigger.TriggerCheck) -> int:
    tab = _open_dataset_tab(parent, config.train_data_dir)
    if tab is not None:
        ds = tab.model.dataset
        rows = [ds.index_of(name) for name in found.missing]
        return tab.model.bulk(rows, f"Prepend '{found.token}'", lambda r: ds.add_trigger(found.token, items=r))
    from lora_studio.core.dataset import Dataset

    return Dataset.open(config.train_data_dir).add_trigger(found.token)


def confirm_start(parent, config) -> bool:
    """True: start the run (the trigger was added, or the user trains anyway); False: don't start."""
    from lora_studio.errors import LoraStudioError

    try:
        found = trigger.check_config(config)
    except LoraStudioError:
        return True  # a missing folder is the run's preflight to report, with its advice
    if found is None or not found.count:
        return True
    box = QMessageBox(QMessageBox.Warning, "Trigger word missing",
                      f"{found.count} of {found.total} captions lack the trigger word '{found.token}'.", parent=parent)
    box.setInformativeText("The LoRA answers to its trigger word only where the captions hold it. Add it now "
                           "(first in each caption that lacks it), or train anyway.")
    box.setDetailedText("\n".join(found.missing))
    add = box.addButton(f"Add it to {found.count} captions", QMessageBox.AcceptRole)
    anyway = box.addButton("Train anyway", QMessageBox.DestructiveRole)
    box.addButton(QMessageBox.Cancel)
    box.setDefaultButton(add)
    parent.last_dialog = box
    box.exec()
    if box.clickedButton() is add:
        add_missing(parent, config, found)
        return True
    return box.clickedButton() is anyway
