"""Single-file checkpoints: our original-layout writer against diffusers' own single-file reader; bundled configs."""

import json
import os

import pytest
import torch

from lora_studio.core.models.loader import (clip_tokenizer, load_pipeline, pipeline_configs, resolve_model,
                                            shipped_config_dir, write_config_folder)
from lora_studio.core.models.original_layout import save_single_file


def _assert_same_weights(a, b):
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ma = getattr(a, comp, None)
        if ma is None:
            continue
        sa, sb = ma.state_dict(), getattr(b, comp).state_dict()
        assert sa.keys() == sb.keys(), comp
        bad = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not bad, f"{comp}: {bad[:5]}"
    for tok in ("tokenizer", "tokenizer_2"):
        if getattr(a, tok, None) is not None:
            text = "a photo of a striped zebra, naïve 日本"
            assert getattr(a, tok)(text).input_ids == getattr(b, tok)(text).input_ids
            assert getattr(a, tok).pad_token_id == getattr(b, tok).pad_token_id


@pytest.mark.parametrize("name,family", [("demo", "sd1"), ("demo-xl", "sdxl")])
def test_single_file_round_trip_offline(tmp_path, monkeypatch, name, family):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = load_pipeline(name)
    # Changing weights away from init makes the round trip meaningful for every tensor.
    with torch.no_grad():
        for p in [*pipe.unet.parameters(), *pipe.vae.parameters(), *pipe.text_encoder.parameters()]:
            p.add_(torch.randn_like(p) * 0.01)
    path = save_single_file(pipe, tmp_path / "model.safetensors")
    ref = resolve_model(path)
    assert (ref.kind, ref.family) == ("single_file", family)
    _assert_same_weights(pipe, load_pipeline(path))

    # The plain original layout (no embedded configs, as other apps write it) with a local config folder.
    bare = save_single_file(pipe, tmp_path / "bare.safetensors", embed_config=False)
    assert resolve_model(bare).family == family
    configs = pipeline_configs(pipe)
    folder = write_config_folder(configs, tmp_path / "cfg")
    if "tokenizer/tokenizer.json" in configs:  # the demo's own tokenizer travels in the config folder
        _assert_same_weights(pipe, load_pipeline(bare, config=folder))


def test_embedded_configs_reference_the_bundled_clip_tokenizer(tmp_path):
    pipe = load_pipeline("demo")
    pipe.tokenizer = clip_tokenizer()
    path = save_single_file(pipe, tmp_path / "m.safetensors")
    assert path.stat().st_size < 3_000_000 + sum(p.numel() * 4 for p in pipe.unet.parameters()) * 2
    again = load_pipeline(path)
    assert again.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


# Parameter counts published for the real models: the bundled configs describe exactly those networks.
@pytest.mark.parametrize("family,variant,unet,te,te2", [
    ("sd1", "base", 859_520_964, 123_060_480, None),
    ("sd2", "v", 865_910_724, 340_387_840, None),
    ("sdxl", "base", 2_567_463_684, 123_060_480, 694_659_840),
])
def test_bundled_configs_match_the_real_architectures(family, variant, unet, te, te2):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = shipped_config_dir(family, variant)
    index = json.loads((folder / "model_index.json").read_text())
    count = lambda m: sum(p.numel() for p in m.parameters())
    with init_empty_weights():
        assert count(UNet2DConditionModel.from_config(json.loads((folder / "unet/config.json").read_text()))) == unet
        assert count(AutoencoderKL.from_config(json.loads((folder / "vae/config.json").read_text()))) == 83_653_863
        assert count(CLIPTextModel(CLIPTextConfig.from_json_file(str(folder / "text_encoder/config.json")))) == te
        if te2:
            cfg = CLIPTextConfig.from_json_file(str(folder / "text_encoder_2/config.json"))
            assert count(CLIPTextModelWithProjection(cfg)) == te2
    assert ("text_encoder_2" in index) == bool(te2)


def test_bundled_clip_tokenizer_is_openai_clip():
    tok = clip_tokenizer()
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert clip_tokenizer("!").pad_token_id == 0
