import io
import math

import pytest

from lora_studio.core import events as ev


@pytest.mark.parametrize(
    "event",
    [
        ev.Started(total_steps=10, phase="train", description="x"),
        ev.Progress(step=3, total=10, loss=0.25, lr=1e-4, it_per_s=2.5, eta_s=2.8, vram_used=None),
        ev.Progress(step=4, total=10, loss=1.0, vram_used=123, vram_peak=456, vram_total=789, phase="class_images"),
        ev.Sample(path="s.png", step=5, prompt="a sks shape"),
        ev.Checkpoint(path="ckpt", step=5),
        ev.Warning(msg="careful"),
        ev.Phase(name="cache", seconds=1.25, peak_bytes=3 * 2**30, note="VAE tiled"),
        ev.Phase(name="load", seconds=0.5),
        ev.Finished(result={"adapter": "a.safetensors", "steps": 10}),
        ev.Failed(message="boom", advice="do this"),
    ],
)
def test_round_trip(event):
    assert ev.from_json(ev.to_json(event)) == event


def test_nan_loss_survives_json():
    back = ev.from_json(ev.to_json(ev.Progress(step=1, total=2, loss=float("nan"))))
    assert math.isnan(back.loss)


def test_jsonl_writer_and_reader(tmp_path):
    path = tmp_path / "runs" / "new" / "events.jsonl"  # a folder that does not exist yet is made
    seen = []
    writer = ev.JsonlWriter(str(path), forward=seen.append)
    events = [ev.Started(total_steps=2), ev.Progress(step=1, total=2, loss=0.5), ev.Finished(result={})]
    for e in events:
        writer(e)
    writer.close()
    assert seen == events
    assert list(ev.read_jsonl(path.read_text().splitlines())) == events


def test_unknown_event_is_an_error():
    with pytest.raises(ValueError, match="unknown event"):
        ev.from_dict({"event": "Nope"})
