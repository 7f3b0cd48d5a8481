"""Preview fast path: cached prompts, layer-by-layer fusing and (on CUDA) a replayed UNet graph must give
exactly the images a fresh engine gives, and every change of the loaded LoRAs must invalidate what it must."""

import numpy as np
import pytest
import torch
from lora_testkit import diff, make_lora, pipeline

from lora_studio.core.inference.engine import PreviewEngine, PreviewRequest, _default_device_dtype, replace

REQ = PreviewRequest("a red circle on a blue background", negative="blurry", steps=2, guidance=5.0, seed=3)
CUDA = torch.cuda.is_available()


def arr(image):
    return np.asarray(image, np.float64) / 255


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fast")
    return {"t": make_lora("demo", d / "t.safetensors", seed=1),  # UNet + text encoder layers
            "u": make_lora("demo", d / "u.safetensors", seed=2, text_encoders=False),  # UNet only
            "c": make_lora("demo", d / "c.safetensors", seed=4, rank=2, alpha=1.0),
            "xl": make_lora("demo-xl", d / "xl.safetensors", seed=3)}


def engine_with(files, weights, name="demo", **kw):
    engine = PreviewEngine(pipe=pipeline(name), **kw)
    engine.set_loras([(files[n], n) for n in weights])
    engine.set_weights(weights)
    return engine


def count_text_encoder_calls(engine):
    calls = []
    for te in (engine.pipe.text_encoder, getattr(engine.pipe, "text_encoder_2", None)):
        if te is not None:
            te.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("model", ["demo", "demo-xl"])
def test_prompt_cache_gives_identical_images(files, model):
    weights = {"t": 0.8, "u": -0.5} if model == "demo" else {"xl": 0.7}
    cached = engine_with(files, weights, model)
    plain = engine_with(files, weights, model, prompt_cache=False)
    calls = count_text_encoder_calls(cached)
    first = arr(cached.generate(REQ))
    n_first = len(calls)
    assert n_first >= 2 and cached.prompt_encodes == 1  # prompt and negative, once
    again = arr(cached.generate(replace(REQ, seed=4)))
    assert len(calls) == n_first and cached.prompt_encodes == 1  # a cache hit runs no text encoder
    assert diff(first, arr(plain.generate(REQ))) == 0.0
    assert diff(again, arr(plain.generate(replace(REQ, seed=4)))) == 0.0
    # A new negative prompt (or none: SDXL then uses zeros) is a new entry.
    for negative in ("", "ugly"):
        other = replace(REQ, negative=negative)
        assert diff(arr(cached.generate(other)), arr(plain.generate(other))) == 0.0
    assert cached.prompt_encodes == 3


def test_slider_moves_after_cache_hits_equal_a_fresh_engine(files):
    engine = engine_with(files, {"t": 1.0, "u": 0.5})
    engine.generate(REQ)
    engine.generate(REQ)  # cache hit
    layers_t = sum(1 for f in engine._fused if "t" in f.factors)
    layers_u = sum(1 for f in engine._fused if "u" in f.factors)
    assert layers_u < len(engine._fused)  # "u" reaches no text-encoder layer

    # Moving the adapter with text-encoder layers must re-encode the prompt (the cached one is stale).
    engine.set_weights({"t": -0.7})
    moved = arr(engine.generate(REQ))
    assert engine.prompt_encodes == 2 and engine.last_apply_layers == layers_t
    assert diff(moved, arr(engine_with(files, {"t": -0.7, "u": 0.5}).generate(REQ))) == 0.0

    # Moving a UNet-only adapter recomputes only its layers and reuses the cached prompt.
    engine.set_weights({"u": 1.5})
    moved = arr(engine.generate(REQ))
    assert engine.prompt_encodes == 2 and engine.last_apply_layers == layers_u
    assert diff(moved, arr(engine_with(files, {"t": -0.7, "u": 1.5}).generate(REQ))) == 0.0

    # Back to weight 0 and back again: the layers return to the snapshot exactly, no drift.
    engine.set_weights({"t": 0.0, "u": 0.0})
    assert diff(arr(engine.generate(REQ)), arr(PreviewEngine(pipe=pipeline("demo")).generate(REQ))) == 0.0
    engine.set_weights({"t": -0.7, "u": 1.5})
    assert diff(arr(engine.generate(REQ)), moved) == 0.0
    assert engine.prompt_encodes == 3  # t at 0 was a new key; t at -0.7 came back from the cache


@pytest.mark.slow
def test_changing_the_set_of_loras_invalidates(files):
    engine = engine_with(files, {"t": 1.0})
    before = arr(engine.generate(REQ))
    encodes = engine.prompt_encodes
    # The same adapter name, another file: fused weights, factors and cached prompts must all be new.
    engine.set_loras([(files["c"], "t")])
    engine.set_weights({"t": 1.0})
    swapped = arr(engine.generate(REQ))
    assert engine.prompt_encodes == encodes + 1
    fresh = PreviewEngine(pipe=pipeline("demo"))
    fresh.set_loras([(files["c"], "t")])
    assert diff(swapped, arr(fresh.generate(REQ))) == 0.0 and diff(swapped, before) > 0.001

    engine.set_loras([(files["c"], "t"), (files["u"], "u")])
    engine.set_weights({"t": 1.0, "u": 0.5})
    fresh.set_loras([(files["c"], "t"), (files["u"], "u")])
    fresh.set_weights({"t": 1.0, "u": 0.5})
    assert diff(arr(engine.generate(REQ)), arr(fresh.generate(REQ))) == 0.0

    engine.set_loras([])
    base = arr(PreviewEngine(pipe=pipeline("demo")).generate(REQ))
    assert diff(arr(engine.generate(REQ)), base) == 0.0


def test_defaults_off_cuda():
    assert _default_device_dtype("cpu", None) == ("cpu", torch.float32)
    engine = PreviewEngine(pipe=pipeline("demo"))
    engine.use_graph(True)
    assert engine.graphed is None  # no graph off CUDA: the forward runs as is


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_graph_replay_matches_eager_across_slider_moves_and_adapter_changes(files):
    dtype = _default_device_dtype("cuda", None)[1]
    assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)

    def make(graph):
        engine = PreviewEngine(pipe=pipeline("demo").to("cuda", dtype), device="cuda", dtype=dtype, graph=graph)
        engine.set_loras([(files["t"], "t"), (files["u"], "u")])
        return engine

    graphed, eager = make(True), make(False)
    assert graphed.graphed is not None and eager.graphed is None
    for weights in ({"t": 1.0, "u": 0.5}, {"t": -0.7, "u": 0.5}, {"t": 0.0, "u": 1.5}):
        graphed.set_weights(weights)
        eager.set_weights(weights)
        assert diff(arr(graphed.generate(REQ)), arr(eager.generate(REQ))) < 1 / 255, weights
    assert graphed.graphed.replays > 0 and len(graphed.graphed.graphs) == 1
    assert all(entry is not None for entry in graphed.graphed.graphs.values())  # captured, not eager

    for engine in (graphed, eager):
        engine.set_loras([(files["c"], "t")])  # modules change: the graph must be captured again
        engine.set_weights({"t": 1.0})
    assert not graphed.graphed.graphs
    assert diff(arr(graphed.generate(REQ)), arr(eager.generate(REQ))) < 1 / 255
    assert len(graphed.graphed.graphs) == 1


@pytest.mark.parametrize("model", ["demo", "demo-xl"])
def test_low_memory_mode_gives_the_same_images(files, model):
    """Low memory keeps the text encoders and the weight snapshots off the GPU and decodes in tiles: on the
    CPU no placement changes, so every image must be exactly the full mode's, through every code path."""
    weights = {"t": 0.8, "u": -0.5} if model == "demo" else {"xl": 0.7}
    full = engine_with(files, weights, model)
    low = engine_with(files, weights, model, low_memory=True)
    assert low.low_memory and not full.low_memory and low.pipe.vae.use_tiling
    calls = count_text_encoder_calls(low)
    assert diff(arr(low.generate(REQ)), arr(full.generate(REQ))) == 0.0
    n = len(calls)
    assert n >= 2 and low.prompt_encodes == 1
    moved = {"t": 0.3, "u": 1.0} if model == "demo" else {"xl": -0.4}
    for engine in (full, low):
        engine.set_weights(moved)
    assert diff(arr(low.generate(REQ)), arr(full.generate(REQ))) == 0.0
    if model == "demo":  # "t" reaches the text encoder: its slider encodes again
        assert len(calls) > n and low.prompt_encodes == 2
    # Without the prompt cache, low memory still encodes through the engine (never the pipeline's own path,
    # which would look for the encoders on the GPU), every time.
    uncached = engine_with(files, moved, model, low_memory=True, prompt_cache=False)
    for _ in range(2):
        assert diff(arr(uncached.generate(REQ)), arr(full.generate(REQ))) == 0.0
    assert uncached.prompt_encodes == 2 and not uncached._prompts


def test_low_memory_tiles_are_half_the_native_size():
    from diffusers import AutoencoderKL

    from lora_studio.core.inference.engine import tile_vae

    def vae(size):
        return AutoencoderKL(sample_size=size, block_out_channels=(8, 8, 8, 8), norm_num_groups=8,
                             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)

    sdxl, demo = vae(1024), vae(64)
    tile_vae(sdxl)
    assert sdxl.use_tiling and (sdxl.tile_sample_min_size, sdxl.tile_latent_min_size) == (512, 64)
    tile_vae(demo)  # 32 px tiles would be 4 latents: the default (the native size) stays
    assert demo.use_tiling and (demo.tile_sample_min_size, demo.tile_latent_min_size) == (64, 8)


@pytest.fixture
def card(monkeypatch):
    """A faked CUDA card of ``card["gib"]`` GiB (8 to start), on any machine."""
    from types import SimpleNamespace

    size = {"gib": 8}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: SimpleNamespace(total_memory=size["gib"] * 2**30))
    return size


def test_low_memory_is_chosen_by_the_card_size(card):
    """SDXL goes low-memory under 16 GiB, SD 1.5 under 6 GiB; the CPU never."""
    from lora_studio.core.inference import engine as E

    assert E.low_memory_default(True, "cpu") is False
    assert E.low_memory_default(True, "cuda") and not E.low_memory_default(False, "cuda")  # an 8 GB card
    card["gib"] = 4
    assert E.low_memory_default(False, "cuda:0")
    card["gib"] = 24
    assert not E.low_memory_default(True, "cuda")


@pytest.mark.parametrize("model", ["demo", "demo-xl"])
def test_int8_unet_fuses_in_eight_bits_and_restores_exactly(files, model):
    """The 8-bit UNet: its Linear weights are int8 rows; the LoRAs load onto it (peft takes the 8-bit layer for
    a Linear); a slider move rounds snapshot + LoRAs back to int8 in place, so a moved engine draws exactly
    what a fresh one at those weights draws; removing the LoRAs gives back the very int8 weights it started
    with. Images stay close to the full-precision model's (rounding only)."""
    from lora_studio.core.accel.int8_base import Int8Linear

    weights = {"t": 0.8, "u": -0.5} if model == "demo" else {"xl": 0.7}
    moved = {"t": -0.3, "u": 1.2} if model == "demo" else {"xl": -0.9}
    engine = PreviewEngine(pipe=pipeline(model), int8_unet=True)
    int8 = [m for m in engine.pipe.unet.modules() if isinstance(m, Int8Linear)]
    assert engine.int8_unet and len(int8) > 50
    start = [(m.q.clone(), m.scale.clone()) for m in int8]
    engine.set_loras([(files[n], n) for n in weights])
    engine.set_weights(weights)
    first = arr(engine.generate(REQ))
    assert any(isinstance(f.base, Int8Linear) for f in engine._fused)
    full = arr(engine_with(files, weights, model).generate(REQ))
    assert 0 < diff(first, full) < 2 / 255  # int8 rounding, on average under a grey level
    engine.set_weights(moved)
    assert diff(arr(engine.generate(REQ)), arr(engine_with(files, moved, model, int8_unet=True).generate(REQ))) == 0.0
    engine.set_loras([])
    assert all(torch.equal(m.q, q) and torch.equal(m.scale, s) for m, (q, s) in zip(int8, start))
    # live adapters run on the 8-bit layers too
    live = engine_with(files, weights, model, int8_unet=True, mode="live")
    assert diff(arr(live.generate(REQ)), first) < 2 / 255


def test_int8_unet_is_chosen_by_the_card_size(card):
    """On by itself for SDXL on cards under 10 GiB (6 and 8 GB cards), never for SD 1.5 or on the CPU."""
    from lora_studio.core.inference import engine as E

    assert E.int8_unet_default(True, "cuda") and not E.int8_unet_default(False, "cuda")
    assert not E.int8_unet_default(True, "cpu")
    card["gib"] = 6
    assert E.int8_unet_default(True, "cuda:0") and not E.int8_unet_default(False, "cuda:0")
    card["gib"] = 12
    assert not E.int8_unet_default(True, "cuda") and E.low_memory_default(True, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_low_memory_mode_on_gpu_keeps_encoders_and_snapshots_on_the_host(files):
    dtype = _default_device_dtype("cuda", None)[1]

    def run(low):
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        engine = PreviewEngine(pipe=pipeline("demo-xl").to("cuda", dtype), device="cuda", dtype=dtype,
                               low_memory=low)
        engine.set_loras([(files["xl"], "xl")])
        images = []
        for w in (0.7, -0.4):
            engine.set_weights({"xl": w})
            images.append(arr(engine.generate(REQ)))  # the native size: no tiles, so the same picture
        peak = torch.cuda.max_memory_allocated() - base
        return engine, images, peak

    low, low_images, low_peak = run(True)
    assert all(p.device.type == "cpu" for te in low._text_encoders() for p in te.parameters())
    assert all(p.device.type == "cuda" for p in low.pipe.unet.parameters())
    unet_layers = {id(m) for m in low.pipe.unet.modules()}
    snaps = [(key in unet_layers, t) for key, (_, snap) in low._snapshots.items() for t in snap]
    assert any(in_unet for in_unet, _ in snaps) and all(s.device.type == "cpu" for _, s in snaps)
    assert all(s.is_pinned() for in_unet, s in snaps if in_unet)  # copied back to the GPU on slider moves
    del low
    full, full_images, full_peak = run(False)
    for a, b in zip(low_images, full_images):
        assert diff(a, b) < 1 / 255
    assert low_peak < full_peak, (low_peak, full_peak)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_int8_unet_on_gpu_replays_its_graph_across_slider_moves(files):
    """8 bits on the GPU, with low memory (as on a 6-8 GB card): the slider rewrites the int8 rows in place, so
    the captured UNet graph keeps replaying and draws what a fresh, uncaptured 8-bit engine draws."""
    from lora_studio.core.accel.int8_base import Int8Linear

    dtype = _default_device_dtype("cuda", None)[1]

    def engine(**kw):
        e = PreviewEngine(pipe=pipeline("demo-xl").to("cuda", dtype), device="cuda", dtype=dtype, low_memory=True, **kw)
        e.set_loras([(files["xl"], "xl")])
        return e

    small = engine(int8_unet=True)
    int8 = [m for m in small.pipe.unet.modules() if isinstance(m, Int8Linear)]
    assert int8 and all(m.q.device.type == "cuda" and m.q.dtype == torch.int8 for m in int8)
    for w in (0.7, -0.4):
        small.set_weights({"xl": w})
        image = arr(small.generate(REQ))
        fresh = engine(int8_unet=True, graph=False)
        fresh.set_weights({"xl": w})
        assert diff(image, arr(fresh.generate(REQ))) < 1 / 255
        full = engine(int8_unet=False)
        full.set_weights({"xl": w})
        assert diff(image, arr(full.generate(REQ))) < 3 / 255  # rounding to 8 bits only
    assert small.graphed.replays > 0 and all(g is not None for g in small.graphed.graphs.values())
