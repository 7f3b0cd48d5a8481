"""The run's memory plan on the CPU with the demo model: phase events, and the on-disk cache of encodings."""

from __future__ import annotations

import os
import time

import torch
from PIL import Image

from lora_studio.core import events as ev
from lora_studio.core.training import train
from tests.core.test_training import Recorder, config, make_dataset, sd1_dir  # noqa: F401 - the fixture

PHASES = ["load", "class_images", "cache", "setup", "train", "save", "samples"]


def _run(model, data, out, cache_dir, monkeypatch, **kw):
    monkeypatch.setenv("LORA_STUDIO_CACHE_DIR", str(cache_dir))
    cfg = config(model, data, out, mode="dreambooth", instance_prompt="a photo of sks shape",
                 with_prior_preservation=True, class_prompt="a photo of a shape", class_data_dir=str(data.parent / "cls"),
                 num_class_images=1, max_train_steps=2, validation_prompt="a photo of sks shape",
                 num_validation_images=1, validation_steps=2, center_crop=True, **kw)
    events = Recorder()
    result = train(cfg, events)
    return events, result


def _cache_note(events) -> str:
    [phase] = [p for p in events.of(ev.Phase) if p.name == "cache"]
    return phase.note


def test_phases_in_order_and_a_second_run_reads_the_encodings_from_disk(sd1_dir, tmp_path, monkeypatch):  # noqa: F811
    data = make_dataset(tmp_path / "data", n=3)
    cache = tmp_path / "cache"
    first, r1 = _run(sd1_dir, data, tmp_path / "out1", cache, monkeypatch)
    phases = first.of(ev.Phase)
    assert [p.name for p in phases] == PHASES
    assert all(p.seconds >= 0 and p.peak_bytes is None for p in phases)  # no GPU peak on the CPU
    assert [ev.from_json(ev.to_json(p)) for p in phases] == phases
    # The phase ends after its own work: class images are made before "class_images" ends, the first step
    # comes after "setup" and before "train" ends.
    order = [type(e).__name__ + ":" + getattr(e, "name", getattr(e, "phase", "")) for e in first]
    assert order.index("Phase:setup") < order.index("Progress:train") < order.index("Phase:train")
    # 3 pictures + 1 class image, 2 captions (instance and class prompt): all encoded on the first run...
    assert _cache_note(first) == "6 encoded, 0 read from disk"
    # ...read on the second, to the same training (the cache holds exactly what encoding gives).
    second, r2 = _run(sd1_dir, data, tmp_path / "out2", cache, monkeypatch)
    assert _cache_note(second) == "0 encoded, 6 read from disk"
    assert r2["loss_history"] == r1["loss_history"]
    # A changed picture is encoded again, alone.
    time.sleep(0.01)
    Image.new("RGB", (64, 64), (10, 200, 30)).save(data / "img1.png")
    os.utime(data / "img1.png")
    third, _ = _run(sd1_dir, data, tmp_path / "out3", cache, monkeypatch)
    assert _cache_note(third) == "1 encoded, 5 read from disk"
    # Another model (other VAE and text-encoder weights) never reads these entries.
    assert _cache_note(_run(sd1_dir, data, tmp_path / "out4", tmp_path / "other", monkeypatch)[0]) == \
        "6 encoded, 0 read from disk"


def test_cached_latents_are_a_plain_whole_picture_encode(sd1_dir, tmp_path):  # noqa: F811
    """The caching path (slicing on, never tiled, read back from disk) gives what one VAE call on the picture
    gives."""
    from lora_studio.config import TrainingConfig
    from lora_studio.core.training import preflight
    from lora_studio.core.training.batches import BatchMaker
    from lora_studio.core.training.data import BatchOrder, load_example
    from lora_studio.core.training.disk_cache import DiskCache
    from lora_studio.core.training.memory import set_vae_tiling
    from lora_studio.core.training.models import load_models

    data = make_dataset(tmp_path / "data", n=2, size=(96, 64))
    cfg = TrainingConfig(pretrained_model_name_or_path=str(sd1_dir), train_data_dir=str(data), mode="dreambooth",
                         instance_prompt="a photo of sks shape", resolution=64, center_crop=True)
    models = load_models(cfg.pretrained_model_name_or_path)
    examples = preflight.collect_examples(cfg)
    disk = DiskCache(tmp_path / "cache")

    def cached():
        maker = BatchMaker(models, cfg, torch.device("cpu"), [BatchOrder(examples, 1, 0)], True, True)
        maker.fill_caches(disk=disk)
        return maker

    set_vae_tiling(models.vae, False)
    first, again = cached(), cached()  # the second reads every entry from disk
    for ex in examples:
        pixels, crop = load_example(ex, center_crop=True, random_flip=False, gen=None)
        with torch.no_grad():
            models.vae.disable_slicing()
            plain = models.vae.encode(pixels[None]).latent_dist
        for maker in (first, again):
            mean, std, got_crop = maker.latent_cache[(ex.path, ex.bucket)]
            torch.testing.assert_close(mean, plain.mean[0].float(), atol=1e-6, rtol=0)
            torch.testing.assert_close(std, plain.std[0].float(), atol=1e-6, rtol=0)
            assert tuple(got_crop) == tuple(crop)
    assert set(first.text_cache) == set(again.text_cache) == {"a photo of sks shape"}
    torch.testing.assert_close(first.text_cache["a photo of sks shape"][0], again.text_cache["a photo of sks shape"][0])


def test_fingerprint_sees_a_change_in_a_middle_layer():
    from lora_studio.core.demo.build import build_sd1_components
    from lora_studio.core.training.disk_cache import fingerprint

    vae = build_sd1_components(0)["vae"]
    before = fingerprint(vae)
    params = list(vae.parameters())
    with torch.no_grad():
        params[len(params) // 2].add_(0.01)  # neither the first nor the last tensor
    assert fingerprint(vae) != before


def test_final_samples_that_do_not_fit_leave_the_saved_lora_and_a_warning(sd1_dir, tmp_path, monkeypatch):  # noqa: F811
    # A card that trains but cannot also draw the final samples (SDXL 4 GB preset on the H100 under 3.5 GiB,
    # 2026-12-07): the LoRA is saved before the samples, and their out-of-memory error becomes a warning.
    # This CPU cannot run out of GPU memory: the drawing raises the error torch raises there.
    from lora_studio.core.training import engine

    def no_room(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(engine._Run, "_draw_samples", no_room)
    data = make_dataset(tmp_path / "data", n=3)
    events, result = _run(sd1_dir, data, tmp_path / "out", tmp_path / "cache", monkeypatch)
    assert not events.of(ev.Failed)
    assert result["samples"] == [] and not result["stopped"]
    assert os.path.isfile(result["lora_path"]) and os.path.isfile(result["adapter_path"])
    [warning] = [w for w in events.of(ev.Warning) if "final samples" in w.msg]
    assert result["lora_path"] in warning.msg
    [samples] = [p for p in events.of(ev.Phase) if p.name == "samples"]
    assert samples.note == "skipped: out of memory"


def test_the_optimizer_and_the_gradients_are_gone_before_the_final_samples(sd1_dir, tmp_path, monkeypatch):  # noqa: F811
    # The final samples get the room training held: the optimizer (with its state) is collected and no trained
    # parameter keeps a gradient. Before, the schedule and accelerate still held the optimizer.
    import gc
    import weakref

    from lora_studio.core.training import engine

    seen = {}
    make_optimizer, draw = engine._Run.make_optimizer, engine._Run._draw_samples

    def recording_make_optimizer(self):
        make_optimizer(self)
        seen["optimizer"] = weakref.ref(self.optimizer.optimizer)  # the torch optimizer inside accelerate's wrapper

    def checking_draw(self, *args, **kwargs):
        gc.collect()
        seen["alive at samples"] = seen["optimizer"]() is not None
        seen["grads at samples"] = sum(p.grad is not None for p in self.params)
        return draw(self, *args, **kwargs)

    monkeypatch.setattr(engine._Run, "make_optimizer", recording_make_optimizer)
    monkeypatch.setattr(engine._Run, "_draw_samples", checking_draw)
    data = make_dataset(tmp_path / "data", n=3)
    events, result = _run(sd1_dir, data, tmp_path / "out", tmp_path / "cache", monkeypatch)
    assert len(result["samples"]) == 1  # the samples were drawn, after the check
    assert seen["alive at samples"] is False and seen["grads at samples"] == 0
