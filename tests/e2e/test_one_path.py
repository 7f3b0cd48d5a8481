"""What the Dataset tab and `dataset check` show is what trains: one loader, one bucket planner."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tomli_w
from PIL import Image
from safetensors.torch import load_file

from lora_studio import config as cfgmod
from lora_studio.core.training.engine import train

ODD_SIZES = [(1000, 1500), (600, 1400), (2048, 512), (1023, 1023)]


def _run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lora_studio", *args], capture_output=True, text=True, cwd=cwd)


def _gray_folder(folder, sixteen_bit: bool):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        # smooth gradients plus a block, 8-bit values; the 16-bit twin holds exactly value * 257
        y, x = np.mgrid[0:48, 0:64]
        a = ((x * 3 + y * 2 + i * 20) % 256).astype(np.uint16)
        a[10:30, 20 + i:40 + i] = rng.integers(0, 256)
        if sixteen_bit:
            Image.fromarray((a * 257).astype(np.uint16)).save(folder / f"p{i}.png")
        else:
            Image.fromarray(a.astype(np.uint8), mode="L").save(folder / f"p{i}.png")
        (folder / f"p{i}.txt").write_text(f"a gray pattern {i}", encoding="utf-8")
    return folder


def _write_config(path, **values):
    cfg = cfgmod.TrainingConfig().replace(**values)
    cfgmod.save(cfg, path)
    return path


@pytest.mark.slow
def test_16_bit_pictures_train_the_same_adapter_as_their_8_bit_twins(tmp_path):
    adapters = []
    for bits in (8, 16):
        data = _gray_folder(tmp_path / f"data{bits}", sixteen_bit=bits == 16)
        with Image.open(data / "p0.png") as im:
            assert (im.mode == "L") == (bits == 8)
        out = tmp_path / f"run{bits}"
        cfg = _write_config(tmp_path / f"run{bits}.toml", pretrained_model_name_or_path="demo", resolution=64,
                            train_data_dir=str(data), output_dir=str(out), max_train_steps=3, rank=4,
                            learning_rate=1e-3, mixed_precision="no", seed=7, validation_prompt="")
        proc = _run_cli("train", str(cfg))
        assert proc.returncode == 0, proc.stderr[-2000:]
        adapters.append(load_file(out / "pytorch_lora_weights.safetensors"))
    a8, a16 = adapters
    assert a8.keys() == a16.keys()
    for key in a8:
        np.testing.assert_allclose(a16[key].float().numpy(), a8[key].float().numpy(), atol=1e-5, err_msg=key)


def _odd_folder(folder):
    folder.mkdir(parents=True)
    for w, h in ODD_SIZES:
        Image.new("RGB", (w, h), (120, 80, 40)).save(folder / f"img_{w}x{h}.png")
        (folder / f"img_{w}x{h}.txt").write_text("a brown plate", encoding="utf-8")
    return folder


def _trained_assignments(tmp_path, data, model, resolution):
    out = tmp_path / f"out-{model}-{resolution}"
    cfg = cfgmod.TrainingConfig().replace(pretrained_model_name_or_path=model, resolution=resolution,
                                          train_data_dir=str(data), output_dir=str(out), max_train_steps=1,
                                          mixed_precision="no", cache_latents=False, validation_prompt="")
    train(cfg, lambda e: None, stop=lambda: True)  # the record is written before the first step
    return json.loads((out / "dataset.json").read_text(encoding="utf-8"))["assignments"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["demo", "demo-xl"])
def test_dataset_json_equals_dataset_check_and_the_bucket_column(tmp_path, qtbot, model):
    from PySide6.QtCore import QSettings, Qt

    from lora_studio.gui.models.caption_model import COL_BUCKET, COL_FILE
    from lora_studio.gui.main_window import MainWindow

    data = _odd_folder(tmp_path / "odd")
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    window = MainWindow(settings=settings, first_run=False, probe_gpu=False)
    qtbot.addWidget(window)
    window.open_dataset(str(data))
    qtbot.waitUntil(lambda: window.dataset_tab.model.rowCount() == len(ODD_SIZES), timeout=30000)
    for resolution in (512, 1024):
        trained = _trained_assignments(tmp_path, data, model, resolution)
        proc = _run_cli("dataset", "check", str(data), "--model", model, "--resolution", str(resolution), "--json")
        assert proc.returncode == 0, proc.stderr
        checked = json.loads(proc.stdout)["assignments"]
        assert trained == checked

        window.training_tab.model_picker.set_model(model)
        window.training_tab.form.set_values({"resolution": resolution})
        window._buckets_changed()
        m = window.dataset_tab.model
        shown = {m.index(r, COL_FILE).data(): m.index(r, COL_BUCKET).data(Qt.DisplayRole) for r in range(m.rowCount())}
        assert shown == {name: f"{w} × {h}" for name, (w, h) in trained.items()}


def test_real_families_keep_their_steps():
    from lora_studio.core.dataset import make_buckets

    # SD 1.5 at 512: 600x1400 is shown and trained the same, sides multiples of 64
    assert make_buckets(512, step=64).assign((600, 1400)) == (320, 768)
    # SDXL at 1024 (step 32): 1000x1500 -> 832x1248 (the old training planner used 832x1216)
    assert make_buckets(1024, sdxl=True).assign((1000, 1500)) == (832, 1248)
