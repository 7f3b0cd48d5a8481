"""The trigger-word guard: a style run whose trigger is missing from 3 of 10 captions is flagged; all present, not."""

from pathlib import Path

import pytest
from PIL import Image

from lora_studio.config import TrainingConfig
from lora_studio.core import events as ev
from lora_studio.core.dataset import trigger
from lora_studio.core.training import preflight


def _style_set(folder: Path, missing: int, n: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (64, 64), (20 * i, 90, 160)).save(folder / f"{i:02d}.png")
        text = "a red circle" if i < missing else "zebra, a red circle"
        (folder / f"{i:02d}.txt").write_text(text + "\n", encoding="utf-8")
    return folder


def _config(data: Path, **kw) -> TrainingConfig:
    return TrainingConfig(train_data_dir=str(data), trigger_word="zebra", **kw)


def test_guard_fires_when_3_of_10_captions_lack_the_trigger(tmp_path):
    cfg = _config(_style_set(tmp_path / "d", missing=3), validation_prompt="a blue square")
    found = trigger.check_config(cfg)
    assert (found.count, found.total) == (3, 10)
    assert found.missing == ["00.png", "01.png", "02.png"]
    seen = []
    run_cfg = preflight.check_trigger(cfg, seen.append)
    assert [type(e) for e in seen] == [ev.Warning] and "3 of 10 captions lack the trigger word 'zebra'" in seen[0].msg
    assert run_cfg.validation_prompt == "zebra, a blue square"


def test_guard_is_quiet_when_every_caption_has_the_trigger(tmp_path):
    cfg = _config(_style_set(tmp_path / "d", missing=0), validation_prompt="zebra, a blue square")
    assert trigger.check_config(cfg).count == 0
    seen = []
    assert preflight.check_trigger(cfg, seen.append) is cfg and seen == []


def test_caption_prefix_counts_and_whole_words_only(tmp_path):
    data = _style_set(tmp_path / "d", missing=3)
    assert trigger.check_config(_config(data, caption_prefix="zebra ")).count == 0
    (data / "05.txt").write_text("zebras, a red circle", encoding="utf-8")
    assert trigger.check_config(_config(data)).count == 4


def test_dreambooth_runs_check_the_validation_prompt_only(tmp_path):
    cfg = TrainingConfig(train_data_dir=str(_style_set(tmp_path / "d", missing=10)), mode="dreambooth",
                         instance_prompt="a photo of sks dog", class_prompt="a photo of a dog",
                         validation_prompt="a dog on the beach")
    assert trigger.run_trigger(cfg) == "sks"
    assert trigger.check_config(cfg) is None  # every image trains on the instance prompt
    assert trigger.validation_prompt(cfg) == "sks, a dog on the beach"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from lora_studio.core.demo.build import build_pipeline

    path = tmp_path_factory.mktemp("model") / "sd1"
    build_pipeline("sd1", seed=1).save_pretrained(path)
    return path


@pytest.mark.slow
def test_cli_train_warns_with_the_count_and_samples_with_the_trigger(tmp_path, tiny_model, capsys):
    from lora_studio.cli import main
    from lora_studio.config import save

    cfg = _config(_style_set(tmp_path / "d", missing=3), pretrained_model_name_or_path=str(tiny_model),
                  output_dir=str(tmp_path / "out"), resolution=64, rank=4, report_to="none", max_train_steps=1,
                  validation_prompt="a blue square", sample_steps=2, num_validation_images=1)
    save(cfg, tmp_path / "run.toml")
    assert main(["train", str(tmp_path / "run.toml"), "--events", str(tmp_path / "ev.jsonl")]) == 0
    assert "warning: 3 of 10 captions lack the trigger word 'zebra'" in capsys.readouterr().err
    events = list(ev.read_jsonl((tmp_path / "ev.jsonl").read_text(encoding="utf-8").splitlines()))
    samples = [e for e in events if isinstance(e, ev.Sample)]
    assert samples and all(s.prompt == "zebra, a blue square" for s in samples)
