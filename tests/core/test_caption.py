"""Captioning: the demo captioner against the renderer's truth, a tiny BLIP and a tiny ONNX tagger through the
real loading code, modes, the trigger word, tag edits, and the errors a user sees."""

import json

import pytest
from PIL import Image

from lora_studio.cli import main
from lora_studio.core.caption import (final_caption, load_captioner, plan, remove_tag, rename_tag, add_tag,
                                      tag_counts)
from lora_studio.core.dataset import Dataset
from lora_studio.errors import LoraStudioError
from tests.core.caption_models import build_blip, build_tagger


def _render(folder, n, seed=7):
    from lora_studio.core.demo.renderer import render

    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        img, scene = render(seed, i)
        img.save(folder / f"p{i:02d}.png")
        truth[f"p{i:02d}.png"] = (scene.colour, scene.shape)
    return truth


def test_demo_captioner_names_colour_and_shape_of_24_rendered_pictures(tmp_path, capsys):
    from lora_studio.core.demo.judge import parse_prompt

    truth = _render(tmp_path / "ds", 24)
    assert main(["caption", str(tmp_path / "ds"), "--model", "demo"]) == 0  # time: bench/NOTES.md, not asserted
    assert "24 of 24 captions written" in capsys.readouterr().out
    ds = Dataset.open(tmp_path / "ds")
    right = 0
    for item in ds:
        assert item.caption_source == "sidecar" and item.prompt.startswith("a ")
        want = parse_prompt(item.prompt)
        right += (want["colour"], want["shape"]) == truth[item.name]
    assert right / 24 >= 0.9, [item.prompt for item in ds]


def test_tiny_blip_from_a_saved_folder_captions_like_the_model_itself(tmp_path):
    import torch

    model, processor = build_blip(tmp_path / "blip")
    captioner = load_captioner(str(tmp_path / "blip"))
    images = [Image.new("RGB", (40, 30), (200, 20, 20)), Image.new("RGB", (24, 36), (20, 20, 200))]
    got = captioner.caption(images)
    with torch.inference_mode():
        out = model.generate(**processor(images=images, return_tensors="pt"), max_new_tokens=40, num_beams=3)
    want = [" ".join(t.split()) for t in processor.batch_decode(out, skip_special_tokens=True)]
    assert got == want and all(isinstance(t, str) and t for t in got)

    # and through the whole folder job, into sidecars
    folder = tmp_path / "ds"
    folder.mkdir()
    for i, im in enumerate(images):
        im.save(folder / f"{i}.png")
    assert main(["caption", str(folder), "--model", str(tmp_path / "blip"), "--trigger", "zq"]) == 0
    assert [(folder / f"{i}.txt").read_text(encoding="utf-8") for i in range(2)] == [f"zq, {t}" for t in want]


def test_onnx_tagger_writes_tags_over_the_thresholds(tmp_path):
    build_tagger(tmp_path / "tagger")
    tagger = load_captioner(str(tmp_path / "tagger"))
    red, blue, green = (Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0)))
    # pictures arrive as RGB and the model reads BGR: red must light red_hair, not blue_sky
    assert tagger.caption([red, blue, green]) == ["red hair, ^_^", "blue sky, ^_^", "^_^"]
    strict = load_captioner(str(tmp_path / "tagger"), general_threshold=0.6, character_threshold=0.5)
    assert strict.caption([red, green]) == ["hakurei reimu, red hair", ""]  # characters first; no rating

    folder = tmp_path / "ds"
    folder.mkdir()
    red.save(folder / "a.png")
    (folder / "a.txt").write_text("my picture\n", encoding="utf-8")
    assert main(["caption", str(folder), "--model", str(tmp_path / "tagger"), "--mode", "append",
                 "--threshold", "0.4"]) == 0
    assert (folder / "a.txt").read_text(encoding="utf-8") == "my picture, red hair, ^_^\n"


def test_tagger_with_a_wrong_tag_list_says_which_file(tmp_path):
    build_tagger(tmp_path / "tagger")
    (tmp_path / "tagger" / "selected_tags.csv").write_text("tag_id,name,category,count\n1,a,0,1\n", encoding="utf-8")
    with pytest.raises(LoraStudioError, match="selected_tags.csv"):
        load_captioner(str(tmp_path / "tagger"))


@pytest.mark.parametrize("mode, old, draft, want", [
    ("empty", "", "a red circle", "a red circle"),
    ("empty", "mine\n", "a red circle", "mine\n"),
    ("overwrite", "mine\n", "a red circle", "a red circle"),
    ("append", "mine\n", "a red circle", "mine, a red circle\n"),
    ("prepend", "mine", "a red circle", "a red circle, mine"),
    ("append", "", "a red circle", "a red circle"),
])
def test_modes(mode, old, draft, want):
    assert final_caption(old, draft, mode) == want
    assert final_caption(old, draft, mode, trigger="zq").startswith("zq, ")


def test_empty_mode_keeps_captions_but_the_trigger_reaches_every_one(tmp_path):
    _render(tmp_path / "ds", 3)
    (tmp_path / "ds" / "p00.txt").write_text("mine", encoding="utf-8")
    (tmp_path / "ds" / "p01.txt").write_text("zq, also mine", encoding="utf-8")
    assert main(["caption", str(tmp_path / "ds"), "--model", "demo", "--trigger", "zq"]) == 0
    texts = [(tmp_path / "ds" / f"p0{i}.txt").read_text(encoding="utf-8") for i in range(3)]
    assert texts[0] == "zq, mine" and texts[1] == "zq, also mine"
    assert texts[2].startswith("zq, a ")
    ds = Dataset.open(tmp_path / "ds")
    assert plan(ds, {}, "empty", "zq") == []  # a second run changes nothing


def test_metadata_jsonl_datasets_keep_their_format(tmp_path):
    from lora_studio.core.demo.renderer import write_style_set

    write_style_set(tmp_path / "style", count=4)
    meta = tmp_path / "style" / "metadata.jsonl"
    meta.write_text("".join(json.dumps({"file_name": f"zebra_{i:02d}.png", "text": "old"}) + "\n" for i in range(4)))
    assert main(["caption", str(tmp_path / "style"), "--model", "demo", "--mode", "overwrite"]) == 0
    assert not list((tmp_path / "style").glob("*.txt"))
    rows = [json.loads(line) for line in (tmp_path / "style" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["text"].endswith("in zebra style") for r in rows)


def test_errors_name_the_model_and_the_fix(tmp_path, capsys):
    _render(tmp_path / "ds", 1)
    assert main(["caption", str(tmp_path / "ds"), "--model", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert "nothing does not exist" in err and "what to do:" in err
    (tmp_path / "empty").mkdir()
    assert main(["caption", str(tmp_path / "ds"), "--model", str(tmp_path / "empty")]) == 1
    assert "holds no captioning model" in capsys.readouterr().err
    assert main(["caption", str(tmp_path / "ds"), "--model", "demo", "--threshold", "2"]) == 1
    assert "--threshold" in capsys.readouterr().err
    with pytest.raises(LoraStudioError, match="offline") as info:
        load_captioner("nobody-here/no-such-captioner", offline=True)
    assert "--model FOLDER" in info.value.advice


def test_an_unreadable_picture_is_skipped_with_its_name(tmp_path, capsys):
    _render(tmp_path / "ds", 2)
    (tmp_path / "ds" / "broken.png").write_bytes(b"not a png")
    assert main(["caption", str(tmp_path / "ds"), "--model", "demo"]) == 0
    assert "broken.png: skipped" in capsys.readouterr().err
    assert (tmp_path / "ds" / "p01.txt").exists() and not (tmp_path / "ds" / "broken.txt").exists()


def test_tag_edits():
    assert tag_counts(["a, b", "b, c, b", ""]) == {"a": 1, "b": 2, "c": 1}
    assert rename_tag("a, b, c\n", "b", "x") == "a, x, c\n"
    assert rename_tag("a, b, x", "b", "x") == "a, x"
    assert rename_tag("a, bb", "b", "x") == "a, bb"
    assert remove_tag("a, b", "a") == "b" and remove_tag("a", "a") == ""
    assert add_tag("a, b", "c") == "a, b, c" and add_tag("a, b", "a") == "a, b"
    assert add_tag("", "c", where="prepend") == "c"


def test_a_repo_id_already_in_the_cache_loads_offline(tmp_path):
    from lora_studio.core.caption.load import fetch

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-tagger"
    build_tagger(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    path = fetch("someone/tiny-tagger", offline=True, cache_dir=str(tmp_path / "hub"))
    assert path == repo / "snapshots" / commit
    with pytest.raises(LoraStudioError, match="not in the Hugging Face cache"):
        fetch("someone/other-tagger", offline=True, cache_dir=str(tmp_path / "hub"))
