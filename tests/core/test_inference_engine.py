"""Preview engine: fused weights equal live adapters, weight changes never reload, cancel within a step."""

import time

import numpy as np
import pytest
import torch
from lora_testkit import diff, make_lora, pipeline

from lora_studio.core.events import Finished, Progress, Started
from lora_studio.core.inference.engine import SCHEDULERS, PreviewEngine, PreviewRequest, replace
from lora_studio.errors import LoraStudioError

REQ = PreviewRequest("a red circle on a blue background", negative="blurry", steps=2, guidance=5.0, seed=3)


def arr(image):
    return np.asarray(image, np.float64) / 255


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    return {"a": make_lora("demo", d / "a.safetensors", seed=1),
            "b": make_lora("demo", d / "b.safetensors", seed=2, rank=2, alpha=1.0),
            "xl": make_lora("demo-xl", d / "xl.safetensors", seed=3)}


def test_weight_change_regenerates_without_reloading(files, monkeypatch):
    engine = PreviewEngine(pipe=pipeline("demo"))
    base = arr(engine.generate(REQ))
    engine.set_loras([(files["a"], "a"), (files["b"], "b")])
    unet, loads = engine.pipe.unet, engine.adapter_loads

    import diffusers
    import lora_studio.core.models.loader as loader

    def forbidden(*a, **k):
        raise AssertionError("reloaded")
    monkeypatch.setattr(loader, "load_pipeline", forbidden)
    monkeypatch.setattr(diffusers.DiffusionPipeline, "load_lora_weights", forbidden, raising=False)
    monkeypatch.setattr(type(engine.pipe), "load_lora_weights", forbidden)

    images = {}
    for w in (0.0, 1.0, -1.5, 0.0, 1.0):
        engine.set_weights({"a": w, "b": 0.0})
        images.setdefault(w, []).append(arr(engine.generate(REQ)))
    assert engine.pipe.unet is unet and engine.adapter_loads == loads and engine.base_loads == 0
    assert diff(images[0.0][0], base) == 0.0  # weight 0 restores the base exactly
    assert diff(images[0.0][1], base) == 0.0
    assert diff(images[1.0][0], images[1.0][1]) == 0.0  # no drift over slider moves
    assert diff(images[1.0][0], base) > 0.01 and diff(images[-1.5][0], images[1.0][0]) > 0.01


def test_fused_weights_equal_live_adapters(files):
    fused = PreviewEngine(pipe=pipeline("demo"))
    live = PreviewEngine(pipe=pipeline("demo"), mode="live")
    for engine in (fused, live):
        engine.set_loras([(files["a"], "a"), (files["b"], "b")])
    for weights in ({"a": 1.0, "b": 0.0}, {"a": 0.7, "b": -0.5}, {"a": -2.0, "b": 2.0}):
        fused.set_weights(weights)
        live.set_weights(weights)
        assert diff(arr(fused.generate(REQ)), arr(live.generate(REQ))) < 1 / 255, weights


def test_two_kohya_files_blend_like_their_diffusers_files(files, tmp_path):
    # The run's main file is kohya's layout; loading a second one used to fail the architecture guard ("no such
    # layer in the model") because the first had wrapped the layers it names.
    from lora_studio.core.lora_files import export_kohya

    kohya = {k: export_kohya(files[k], tmp_path / f"{k}_kohya.safetensors", family="sd1") for k in ("a", "b")}
    images = []
    for pair in ((files["a"], files["b"]), (kohya["a"], kohya["b"])):
        engine = PreviewEngine(pipe=pipeline("demo"))
        engine.set_loras([(pair[0], "a"), (pair[1], "b")])
        engine.set_weights({"a": 0.8, "b": -0.6})
        images.append(arr(engine.generate(REQ)))
    assert diff(images[0], images[1]) < 1e-3


def test_progress_and_cancel_within_one_step(files):
    engine = PreviewEngine(pipe=pipeline("demo"))
    calls = []
    engine.pipe.unet.register_forward_hook(lambda *a: calls.append(time.perf_counter()))
    events = []
    image = engine.generate(replace(REQ, steps=4), events.append)
    assert image is not None and len(calls) == 4
    assert [type(e) for e in events] == [Started, Progress, Progress, Progress, Progress, Finished]
    assert [e.step for e in events[1:-1]] == [1, 2, 3, 4]

    calls.clear()
    seen = []
    stop_after = 2

    def emit(event):
        seen.append(event)

    def stop():
        return sum(isinstance(e, Progress) for e in seen) >= stop_after

    assert engine.generate(replace(REQ, steps=20), emit, stop) is None
    assert len(calls) == stop_after  # returned right after the step during which stop turned true
    assert not any(isinstance(e, Finished) for e in seen)


def test_schedulers_and_sizes():
    engine = PreviewEngine(pipe=pipeline("demo"))
    outs = {}
    for key, label in SCHEDULERS.items():
        outs[key] = engine.generate(replace(REQ, scheduler=label))
        assert outs[key].size == (64, 64)
    assert diff(arr(outs["euler"]), arr(outs["euler_a"])) > 0  # a different sampler really ran
    assert engine.generate(replace(REQ, width=48, height=32)).size == (48, 32)
    with pytest.raises(LoraStudioError, match="unknown scheduler"):
        engine.generate(replace(REQ, scheduler="warp drive"))


def test_guard_and_weight_range(files):
    engine = PreviewEngine(pipe=pipeline("demo"))
    with pytest.raises(LoraStudioError, match="SDXL"):
        engine.set_loras([(files["xl"], "xl")])
    assert engine.loras == {}
    engine.set_loras([(files["a"], "a")])
    with pytest.raises(LoraStudioError, match="outside"):
        engine.set_weights({"a": 2.5})


def test_grids_are_labelled(files):
    engine = PreviewEngine(pipe=pipeline("demo"))
    engine.set_loras([(files["a"], "a")])
    grid = engine.weight_grid(replace(REQ, steps=1), "a", [0.0, 1.0], [1, 2])
    assert grid.width > 2 * 64 and grid.height > 2 * 64
    a = np.asarray(grid)
    assert (a[:10] < 128).any()  # header text drawn
    ck = engine.checkpoint_grid(replace(REQ, steps=1), [("step 10", files["a"]), ("step 20", files["b"])], [1])
    assert ck.height > 2 * 64
    assert engine.loras.keys() == {"a"}
