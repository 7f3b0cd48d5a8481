"""What the app remembers between starts (QSettings): the training form, the base model, the preview settings,
and per dataset folder the output folder of its last run (whose config.toml brings its settings back)."""

from __future__ import annotations

import json
import os

from PySide6.QtCore import QSettings

from lora_studio import config as cfgmod
from lora_studio.gui.widgets.prompt_panel import DEFAULTS as PREVIEW_DEFAULTS

FORM, MODEL, PREVIEW, PREVIEW_MODEL, RUNS = ("training/values", "training/model", "preview/params",
                                             "preview/model", "runs_by_dataset")
KEYS = (FORM, MODEL, PREVIEW, PREVIEW_MODEL, RUNS)
MAX_DATASETS = 50


def _json(settings: QSettings, key: str, default):
    raw = settings.value(key)
    try:
        return json.loads(raw) if isinstance(raw, str) else default
    except ValueError:
        return default


def save(settings: QSettings, training_tab, preview_tab) -> None:
    settings.setValue(FORM, json.dumps(training_tab.form.values()))
    settings.setValue(MODEL, training_tab.model_picker.model())
    settings.setValue(PREVIEW, json.dumps(preview_tab.params()))
    settings.setValue(PREVIEW_MODEL, preview_tab.model_picker.model())
    settings.sync()


def restore(settings: QSettings, training_tab, preview_tab) -> str:
    """Put the remembered settings back; returns what could not be restored ("" when all was)."""
    values = _json(settings, FORM, None)
    problem = ""
    if isinstance(values, dict):
        data = cfgmod.TrainingConfig().to_dict()
        data.update({k: v for k, v in values.items() if k in cfgmod.FIELDS})  # fields of older versions drop
        data["pretrained_model_name_or_path"] = settings.value(MODEL) or "demo"
        try:
            training_tab.set_config(cfgmod.from_dict(data, source="saved settings"))
        except cfgmod.ConfigError as exc:
            problem = str(exc)
    params = _json(settings, PREVIEW, None)
    if isinstance(params, dict):
        preview_tab.prompt_panel.set_params(params)
    if settings.value(PREVIEW_MODEL):
        preview_tab.model_picker.set_model(str(settings.value(PREVIEW_MODEL)))
    return problem


def clear(settings: QSettings) -> None:
    for key in KEYS:
        settings.remove(key)
    settings.sync()


def reset(training_tab, preview_tab, dataset: str) -> None:
    training_tab.set_config(cfgmod.TrainingConfig(train_data_dir=dataset))
    training_tab.follow_model()  # the default 512 px is no size for the demo model
    preview_tab.prompt_panel.set_params(PREVIEW_DEFAULTS)
    preview_tab.model_picker.set_model(cfgmod.TrainingConfig().pretrained_model_name_or_path)


def remember_run(settings: QSettings, dataset: str, output_dir: str) -> None:
    if not dataset:
        return
    runs = _json(settings, RUNS, {})
    runs.pop(os.path.abspath(dataset), None)
    runs[os.path.abspath(dataset)] = os.path.abspath(output_dir)
    settings.setValue(RUNS, json.dumps(dict(list(runs.items())[-MAX_DATASETS:])))


def last_run_config(settings: QSettings, dataset: str) -> cfgmod.TrainingConfig | None:
    out = _json(settings, RUNS, {}).get(os.path.abspath(dataset))
    path = os.path.join(out, "config.toml") if out else ""
    if not path or not os.path.isfile(path):
        return None
    try:
        return cfgmod.load(path)
    except cfgmod.ConfigError:
        return None
