"""Apple silicon: the run trains on MPS, and nothing calls MPS "CUDA"."""

import pytest
import torch

from lora_studio import config as cfgmod
from lora_studio.core import system
from lora_studio.core.training import preflight
from lora_studio.errors import LoraStudioError


@pytest.fixture
def apple_silicon(monkeypatch):
    # This machine has no Apple GPU: stand torch's two availability answers in for a Mac's.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * 2**30, raising=False)


def test_a_mac_trains_on_mps(apple_silicon):
    assert system.training_device() == torch.device("mps")
    assert system.gpu_info().backend == "mps"


def test_a_machine_without_gpus_trains_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert system.training_device() == torch.device("cpu")
    assert system.memory_reading(torch.device("cpu")) == (0, 0, 0)


def test_what_mps_cannot_run_is_said_before_any_work():
    mps = torch.device("mps")
    preflight.check_device(cfgmod.TrainingConfig(), mps)  # the default run is fine
    with pytest.raises(LoraStudioError, match="int8_base.*Apple GPU"):
        preflight.check_device(cfgmod.TrainingConfig().replace(int8_base=True), mps)
    with pytest.raises(LoraStudioError, match="fp16.*Apple GPU"):
        preflight.check_precision(cfgmod.TrainingConfig().replace(mixed_precision="fp16"), mps)
