"""The Training tab's "GPUs" choice: a two-process run (CPU processes, gloo) started, stopped and resumed."""

import pytest
import torch
from safetensors.torch import load_file

from lora_studio import config as cfgmod
from lora_studio.core import events as ev
from lora_studio.core.training.launch import train_processes
from lora_studio.gui.launch_worker import FORCE_ENV
from tests.gui.conftest import make_images

ADAPTER = "pytorch_lora_weights.safetensors"
STEPS = 40


def test_gpus_choice_is_hidden_with_one_device(qtbot, make_window, monkeypatch):
    monkeypatch.delenv(FORCE_ENV, raising=False)
    tab = make_window().training_tab
    tab.set_gpu({"name": "CPU", "total": 0, "cuda": False})
    assert tab.processes.isHidden() and tab.processes.value() == 1
    tab.set_gpu({"name": "H100", "total": 80 * 2**30, "cuda": True, "count": 2})
    assert not tab.processes.isHidden() and tab.processes.value() == 2
    assert tab.preset_combo.currentData() == cfgmod.preset_for_memory(80)  # one GPU's memory picks the preset


@pytest.mark.slow
def test_two_process_run_stops_and_resumes_to_the_uninterrupted_result(qtbot, make_window, tmp_path, tiny_sd1,
                                                                       monkeypatch):
    monkeypatch.setenv(FORCE_ENV, "2")
    data = make_images(tmp_path / "data", 4, size=(64, 64))
    window = make_window(probe_gpu=True)
    qtbot.waitUntil(lambda: window.gpu_label.text().startswith(("CPU", "GPU")), timeout=120000)
    tab = window.training_tab
    assert not tab.processes.isHidden() and tab.processes.value() == 2
    tab.model_picker.set_model(str(tiny_sd1))
    tab.form.set_values(dict(train_data_dir=str(data), output_dir=str(tmp_path / "out"), resolution=64,
                             max_train_steps=STEPS, checkpointing_steps=1000, rank=4, learning_rate=1e-3,
                             report_to="none", validation_prompt="", seed=7))
    seen = []
    tab.event_received.connect(seen.append)
    steps = lambda: [e.step for e in seen if isinstance(e, ev.Progress) and e.phase == "train"]  # noqa: E731

    with qtbot.waitSignal(tab.run_finished, timeout=600000) as stopped:
        tab.start_btn.click()
        qtbot.waitUntil(lambda: len(steps()) >= 2, timeout=600000)
        tab.stop_btn.click()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=60000)
    first = stopped.args[0]
    assert first["stopped"] and first["num_processes"] == 2 and 2 <= first["steps"] < STEPS
    assert (tmp_path / "out" / "checkpoints" / f"checkpoint-{first['steps']}").is_dir()
    assert not (tmp_path / "out" / "launch" / "STOP").exists()

    seen.clear()
    with qtbot.waitSignal(tab.run_finished, timeout=600000) as resumed:
        tab.resume_btn.click()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=60000)
    second = resumed.args[0]
    assert not second["stopped"] and second["steps"] == STEPS and second["num_processes"] == 2
    assert steps()[0] == first["steps"] + 1  # continued, not restarted
    assert tab.plot.points == STEPS  # one curve across the stop
    assert not any(isinstance(e, ev.Failed) for e in seen)

    # The same run without a stop, straight through the launcher.
    whole = tab.config()
    whole.output_dir = str(tmp_path / "whole")
    result = train_processes(whole, lambda e: None, processes=2)
    assert result["num_processes"] == 2 and result["steps"] == STEPS
    ours, straight = load_file(tmp_path / "out" / ADAPTER), load_file(tmp_path / "whole" / ADAPTER)
    assert ours.keys() == straight.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], straight[key], atol=1e-5, rtol=0)
