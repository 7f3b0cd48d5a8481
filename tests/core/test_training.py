"""The training engine on tiny real SD1/SDXL pipelines (random init, the demo architecture), on CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import load_file

from lora_studio.config import TrainingConfig
from lora_studio.core import events as ev
from lora_studio.core.training import train
from lora_studio.core.training.engine import TrainingFailed

COLORS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 40)]


@pytest.fixture(scope="session")
def sd1_dir(tmp_path_factory) -> Path:
    from lora_studio.core.demo.build import build_pipeline

    path = tmp_path_factory.mktemp("models") / "sd1"
    build_pipeline("sd1", seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory) -> Path:
    from lora_studio.core.demo.build import build_pipeline

    path = tmp_path_factory.mktemp("models") / "sdxl"
    build_pipeline("sdxl", seed=0).save_pretrained(path)
    return path


def make_dataset(folder: Path, n: int = 4, captions: list[str] | None = None, size=(64, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.new("RGB", size, (250, 250, 250))
        ImageDraw.Draw(im).ellipse((8 + 2 * i, 8, size[0] - 8, size[1] - 8), fill=COLORS[i % len(COLORS)])
        im.save(folder / f"img{i}.png")
        if captions is not None:
            (folder / f"img{i}.txt").write_text(captions[i % len(captions)], encoding="utf-8")
    return folder


def config(model: Path, data: Path, out: Path, **kw) -> TrainingConfig:
    base = dict(pretrained_model_name_or_path=str(model), train_data_dir=str(data), output_dir=str(out),
                resolution=64, max_train_steps=4, checkpointing_steps=100, rank=4, learning_rate=1e-3,
                report_to="none", sample_steps=3, seed=7)
    base.update(kw)
    return TrainingConfig(**base)


class Recorder(list):
    def __call__(self, event):
        self.append(event)

    def of(self, cls, phase=None):
        return [e for e in self if isinstance(e, cls) and (phase is None or getattr(e, "phase", None) == phase)]


def assert_event_stream(events: Recorder, total: int):
    train_progress = events.of(ev.Progress, "train")
    steps = [p.step for p in train_progress]
    assert steps and all(b > a for a, b in zip(steps, steps[1:])), steps
    assert steps[-1] == total
    assert all(p.loss is not None and math.isfinite(p.loss) for p in train_progress)
    assert all(p.eta_s is not None and p.eta_s >= 0 and p.it_per_s and p.it_per_s > 0 for p in train_progress)
    assert all(p.vram_used is None and p.vram_total is None for p in train_progress)  # CPU
    assert train_progress[-1].eta_s == 0
    assert len(events.of(ev.Finished)) == 1 and isinstance(events[-1], ev.Finished)
    assert not events.of(ev.Failed)
    # Every event survives the JSON-lines round trip a multi-GPU child process uses.
    assert [ev.from_json(ev.to_json(e)) for e in events] == list(events)


def test_style_run_events_outputs_and_checkpoints(sd1_dir, tmp_path):
    data = make_dataset(tmp_path / "data", captions=["a red circle in zebra style", "a blue circle in zebra style"])
    cfg = config(sd1_dir, data, tmp_path / "out", max_train_steps=5, checkpointing_steps=1,
                 checkpoints_total_limit=2, lora_alpha=8.0, validation_prompt="a circle", validation_steps=3,
                 num_validation_images=1)
    events = Recorder()
    result = train(cfg, events)
    assert_event_stream(events, 5)
    out = tmp_path / "out"
    assert result["adapter_path"] == str(out / "pytorch_lora_weights.safetensors")
    assert result["steps"] == 5 and result["stopped"] is False and result["family"] == "sd1"
    assert result["rank"] == 4 and result["alpha"] == 8.0
    assert [s for s, _ in result["loss_history"]] == [1, 2, 3, 4, 5]
    if not torch.cuda.is_available():  # the result says whether (and why not) the CUDA-graph step ran
        assert result["fast_path"] == {"active": False, "reason": "the fast path needs a CUDA GPU (training on cpu)"}
    # Checkpoints every step, only the newest two kept, each complete and loadable on its own.
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["checkpoint-3", "checkpoint-4"]
    assert [c.step for c in events.of(ev.Checkpoint)] == [1, 2, 3, 4]
    for name in names:
        assert {"pytorch_lora_weights.safetensors", "training_state.pt", "state.json"} <= {
            p.name for p in (out / "checkpoints" / name).iterdir()}
    samples = events.of(ev.Sample)
    assert [s.step for s in samples] == [3, 5] and all(Path(s.path).is_file() for s in samples)
    assert (out / "config.toml").is_file()
    # alpha != rank and the base architecture are recorded in the file.
    with safe_open(result["adapter_path"], "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["lora_studio.alpha"] == "8.0" and meta["lora_studio.rank"] == "4"
    assert meta["lora_studio.base_family"] == "sd1"
    packed = json.loads(meta["lora_adapter_metadata"])
    assert packed["unet.lora_alpha"] == 8.0 and packed["unet.r"] == 4
    assert keys and all(k.startswith("unet.") for k in keys)
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporaries left behind


def _adapter(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.slow
def test_resume_after_stop_equals_uninterrupted_run(sd1_dir, tmp_path):
    # Random flips + random crops (no latent cache), gradient accumulation and prior preservation: every
    # source of randomness and every bit of optimizer state must come back exactly.
    data = make_dataset(tmp_path / "data", n=2, size=(72, 64))
    classes = make_dataset(tmp_path / "classes", n=2)
    common = dict(mode="dreambooth", instance_prompt="a photo of sks circle", with_prior_preservation=True,
                  class_prompt="a photo of circle", class_data_dir=str(classes), num_class_images=2,
                  random_flip=True, gradient_accumulation_steps=2, max_train_steps=4, checkpointing_steps=2,
                  lr_scheduler="cosine", lr_warmup_steps=2, lora_dropout=0.1, snr_gamma=5.0, noise_offset=0.05)
    full = train(config(sd1_dir, data, tmp_path / "full", **common), Recorder())

    events = Recorder()
    stop_after = 3  # stop once step 3 is done: the run saves a checkpoint there
    first = train(config(sd1_dir, data, tmp_path / "split", **common), events,
                  stop=lambda: len(events.of(ev.Progress, "train")) >= stop_after)
    assert first["stopped"] is True and first["steps"] == stop_after
    assert len(events.of(ev.Finished)) == 1
    assert (tmp_path / "split" / "checkpoints" / f"checkpoint-{stop_after}").is_dir()

    events2 = Recorder()
    second = train(config(sd1_dir, data, tmp_path / "split", **common), events2, resume=True)
    assert [p.step for p in events2.of(ev.Progress, "train")] == [4]
    assert second["steps"] == 4
    a, b = _adapter(full["adapter_path"]), _adapter(second["adapter_path"])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
    assert [round(x, 6) for _, x in full["loss_history"]] == [round(x, 6) for _, x in second["loss_history"]]


# ------------------------------------------------------------------------------ the file in plain diffusers
def _merged_by_hand(model_dir: Path, adapter_path: str, scale: float):
    """The base pipeline with W += scale * up @ down written into every targeted weight, by hand."""
    from lora_studio.core.models.loader import load_pipeline

    pipe = load_pipeline(str(model_dir), torch_dtype=torch.float32)
    state = load_file(adapter_path)
    downs = {k: v for k, v in state.items() if k.endswith(".lora_A.weight")}  # peft key names
    assert downs
    for key, down in downs.items():
        up = state[key.replace(".lora_A.weight", ".lora_B.weight")]
        component, rest = key.split(".", 1)
        module = getattr(pipe, component).get_submodule(rest.rsplit(".", 2)[0])
        with torch.no_grad():
            module.weight += scale * (up.float() @ down.float())
    return pipe


def _image(pipe, prompt="a red circle in zebra style"):
    out = pipe(prompt, num_inference_steps=4, generator=torch.Generator().manual_seed(3), output_type="np")
    return torch.from_numpy(out.images[0])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_adapter_loads_in_plain_diffusers_with_alpha_scaling(family, sd1_dir, sdxl_dir, tmp_path):
    from lora_studio.core.models.loader import load_pipeline

    model = sd1_dir if family == "sd1" else sdxl_dir
    data = make_dataset(tmp_path / "data", n=2, captions=["a red circle in zebra style"])
    cfg = config(model, data, tmp_path / "out", rank=4, lora_alpha=12.0, learning_rate=2e-2, max_train_steps=3,
                 train_text_encoder=True, text_encoder_lr=2e-2)
    result = train(cfg, Recorder())
    with safe_open(result["adapter_path"], "pt") as f:
        prefixes = {k.split(".")[0] for k in f.keys()}
        assert f.metadata()["lora_studio.base_family"] == family
    assert prefixes == ({"unet", "text_encoder", "text_encoder_2"} if family == "sdxl" else {"unet", "text_encoder"})

    pipe = load_pipeline(str(model), torch_dtype=torch.float32)
    base = _image(pipe)
    pipe.load_lora_weights(str(tmp_path / "out"))
    loaded = _image(pipe)
    by_hand = _image(_merged_by_hand(model, result["adapter_path"], 12.0 / 4))
    wrong_scale = _image(_merged_by_hand(model, result["adapter_path"], 1.0))
    assert (loaded - by_hand).abs().mean() < 1 / 255
    # The comparison can fail: the adapter visibly changes the image, and alpha/rank is what makes it match.
    assert (loaded - base).abs().mean() > 2 / 255
    assert (loaded - wrong_scale).abs().mean() > 1 / 255


def test_int8_base_dreambooth_run_matches_the_16bit_run_and_saves_a_normal_adapter(sd1_dir, tmp_path):
    """int8_base: LoRA in before quantising, class images made by the quantised model, the usual adapter file."""
    from lora_studio.core.models.loader import load_pipeline

    data = make_dataset(tmp_path / "data", n=2)
    common = dict(mode="dreambooth", instance_prompt="a photo of sks circle", with_prior_preservation=True,
                  class_prompt="a photo of circle", num_class_images=2, max_train_steps=3, learning_rate=2e-2)
    runs = {}
    for int8 in (False, True):
        events = Recorder()
        runs[int8] = train(config(sd1_dir, data, tmp_path / f"out{int8}", int8_base=int8,
                                  class_data_dir=str(tmp_path / f"class{int8}"), **common), events)
        assert_event_stream(events, 3)
        assert len(list((tmp_path / f"class{int8}").glob("*.png"))) == 2
    plain, q8 = runs[False], runs[True]
    assert plain["int8_base_saved_bytes"] == 0 and q8["int8_base_saved_bytes"] > 0
    # The same seed, data and LoRA init: the first loss differs only by the base's rounding.
    assert q8["loss_history"][0][1] == pytest.approx(plain["loss_history"][0][1], rel=2e-2)
    a, b = _adapter(plain["adapter_path"]), _adapter(q8["adapter_path"])
    assert a.keys() == b.keys()  # the same adapter layout: nothing of the 8-bit base leaks into the file
    pipe = load_pipeline(str(sd1_dir), torch_dtype=torch.float32)
    base = _image(pipe, "a photo of sks circle")
    pipe.load_lora_weights(str(tmp_path / "outTrue"))
    assert (_image(pipe, "a photo of sks circle") - base).abs().mean() > 1 / 255  # it loads on the full model


def test_int8_base_resume_equals_uninterrupted_run(sd1_dir, tmp_path):
    # The checkpoint holds the LoRA and optimizer only; resuming quantises the base again the same way.
    data = make_dataset(tmp_path / "data", n=2)
    common = dict(int8_base=True, mode="dreambooth", instance_prompt="a photo of sks circle", max_train_steps=4,
                  checkpointing_steps=2)
    full = train(config(sd1_dir, data, tmp_path / "full", **common), Recorder())
    events = Recorder()
    first = train(config(sd1_dir, data, tmp_path / "split", **common), events,
                  stop=lambda: len(events.of(ev.Progress, "train")) >= 2)
    assert first["stopped"] is True and first["steps"] == 2
    second = train(config(sd1_dir, data, tmp_path / "split", **common), Recorder(), resume=True)
    assert second["steps"] == 4 and second["int8_base_saved_bytes"] > 0
    a, b = _adapter(full["adapter_path"]), _adapter(second["adapter_path"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ bad input stops before work
def _fails_before_work(cfg, tmp_path, *words):
    events = Recorder()
    with pytest.raises(TrainingFailed) as info:
        train(cfg, events)
    failed = events.of(ev.Failed)
    assert len(failed) == 1 and failed[0].message == str(info.value) and failed[0].advice
    text = (str(info.value) + " " + info.value.advice).lower()
    for word in words:
        assert word.lower() in text, (word, text)
    assert not (tmp_path / "out").exists()  # nothing was written: the run stopped before any work
    assert not events.of(ev.Started)
    return info.value


def test_empty_dataset(sd1_dir, tmp_path):
    (tmp_path / "data").mkdir()
    _fails_before_work(config(sd1_dir, tmp_path / "data", tmp_path / "out"), tmp_path, "no images", "add")


def test_missing_captions_in_style_mode(sd1_dir, tmp_path):
    data = make_dataset(tmp_path / "data", n=3, captions=["a red circle"])
    (data / "img1.txt").unlink()
    _fails_before_work(config(sd1_dir, data, tmp_path / "out"), tmp_path, "img1.png", "no caption", "caption")


def test_missing_instance_token(sd1_dir, tmp_path):
    data = make_dataset(tmp_path / "data", n=2)
    cfg = config(sd1_dir, data, tmp_path / "out", mode="dreambooth", instance_prompt="a photo of a dog",
                 with_prior_preservation=True, class_prompt="a photo of a dog", class_data_dir=str(tmp_path / "c"))
    _fails_before_work(cfg, tmp_path, "instance_prompt", "rare token", "sks")


def test_empty_instance_prompt_names_the_key(sd1_dir, tmp_path):
    data = make_dataset(tmp_path / "data", n=2)
    cfg = config(sd1_dir, data, tmp_path / "out")
    cfg.mode = "dreambooth"  # set after construction, as a GUI form would, so train() validates it
    _fails_before_work(cfg, tmp_path, "instance_prompt")


def test_folder_that_is_not_a_pipeline(tmp_path):
    data = make_dataset(tmp_path / "data", n=2, captions=["x"])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "unet.bin").write_bytes(b"")
    _fails_before_work(config(tmp_path / "model", data, tmp_path / "out"), tmp_path, "model_index.json")


def test_unsupported_precision_on_this_device(sd1_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU case")
    data = make_dataset(tmp_path / "data", n=2, captions=["x"])
    _fails_before_work(config(sd1_dir, data, tmp_path / "out", mixed_precision="fp16"), tmp_path,
                       "fp16", "mixed_precision")


def test_missing_optional_optimizer(sd1_dir, tmp_path):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    data = make_dataset(tmp_path / "data", n=2, captions=["x"])
    _fails_before_work(config(sd1_dir, data, tmp_path / "out", optimizer="adamw8bit"), tmp_path,
                       "bitsandbytes", "pip install", "adamw")


# ------------------------------------------------------------------------------ NaN, stop
def test_nan_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path):
    """A text encoder whose embedding of 'zebra' is NaN: the first batch captioned with it poisons the loss."""
    from lora_studio.core.demo.build import build_pipeline
    from lora_studio.core.training.data import BatchOrder
    from lora_studio.core.training.preflight import collect_examples

    pipe = build_pipeline("sd1", seed=0)
    zebra = pipe.tokenizer("zebra", add_special_tokens=False).input_ids
    with torch.no_grad():
        pipe.text_encoder.get_input_embeddings().weight[zebra] = float("nan")
    pipe.save_pretrained(tmp_path / "model")
    data = make_dataset(tmp_path / "data", n=4, captions=["a red circle", "a green circle", "a blue circle",
                                                          "a zebra circle"])
    cfg = config(tmp_path / "model", data, tmp_path / "out", max_train_steps=8, checkpointing_steps=1)
    order = BatchOrder(collect_examples(cfg), 1, cfg.seed)
    bad_step = next(m + 1 for m in range(8) if "zebra" in order.batch(m)[0].caption)
    assert bad_step >= 2, "pick a seed whose first zebra batch is not the first step"

    events = Recorder()
    with pytest.raises(TrainingFailed, match=f"step {bad_step}"):
        train(cfg, events)
    assert [p.step for p in events.of(ev.Progress, "train")] == list(range(1, bad_step))
    assert events.of(ev.Failed)[-1].message.startswith("the loss became nan")
    assert f"checkpoint-{bad_step - 1}" in events.of(ev.Failed)[-1].advice
    assert not events.of(ev.Finished)
    ckpts = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert ckpts[-1] == f"checkpoint-{bad_step - 1}"
    assert not (tmp_path / "out" / "pytorch_lora_weights.safetensors").exists()
    good = load_file(str(tmp_path / "out" / "checkpoints" / ckpts[-1] / "pytorch_lora_weights.safetensors"))
    assert all(torch.isfinite(t).all() for t in good.values())


def test_stop_saves_adapter_and_checkpoint(sd1_dir, tmp_path):
    import threading

    data = make_dataset(tmp_path / "data", n=2, captions=["a circle"])
    flag = threading.Event()
    events = Recorder()

    def emit(event):
        events(event)
        if isinstance(event, ev.Progress) and event.phase == "train" and event.step == 2:
            flag.set()

    result = train(config(sd1_dir, data, tmp_path / "out", max_train_steps=50), emit, stop=flag)
    assert result["stopped"] and result["steps"] == 2
    assert Path(result["adapter_path"]).is_file() and result["checkpoint"].endswith("checkpoint-2")
    assert len(events.of(ev.Finished)) == 1 and not events.of(ev.Failed)
