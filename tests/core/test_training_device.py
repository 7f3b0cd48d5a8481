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


def test_auto_precision_takes_bf16_where_the_card_has_it(monkeypatch):
    # bf16 needs no loss scaler, so the captured fast step can run; fp16 on older cards; fp32 off CUDA.
    auto = cfgmod.TrainingConfig()
    assert auto.mixed_precision == "auto"
    assert preflight.resolve_precision(auto, torch.device("cpu")).mixed_precision == "no"
    assert preflight.resolve_precision(auto, torch.device("mps")).mixed_precision == "no"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert preflight.resolve_precision(auto, torch.device("cuda", 0)).mixed_precision == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert preflight.resolve_precision(auto, torch.device("cuda", 0)).mixed_precision == "fp16"
    fixed = auto.replace(mixed_precision="fp16")
    assert preflight.resolve_precision(fixed, torch.device("cuda", 0)) is fixed
    for family in cfgmod.PRESETS:  # presets leave the choice to the card
        for gib in cfgmod.PRESET_SIZES:
            assert cfgmod.apply_preset(auto, family, gib).mixed_precision == "auto"


def test_the_preview_takes_the_same_precision_as_training(monkeypatch):
    # One rule for the card's working precision: the preview's default dtype follows training's "auto".
    from lora_studio.core.inference.engine import _default_device_dtype

    for bf16 in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, b=bf16, **k: b)
        trained = preflight.resolve_precision(cfgmod.TrainingConfig(), torch.device("cuda", 0)).mixed_precision
        assert _default_device_dtype("cuda", None)[1] == system.precision_dtype(trained)
    assert _default_device_dtype("cpu", None)[1] == torch.float32
