"""LoRA files: kohya export against diffusers' own kohya reader, alpha, metadata, naming, the architecture guard."""

import json

import pytest
import torch
from safetensors import safe_open

from lora_studio.core.lora_files import (check_fits, export_kohya, inspect_file, kohya_module_map, peft_state_dict,
                                         read_lora, write_diffusers)
from lora_studio.errors import LoraStudioError
from lora_testkit import diff, make_lora, pipeline, render

FAMILY = {"demo": ("sd1", "sd_v1"), "demo-xl": ("sdxl", "sdxl_base_v1-0")}


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    out = {}
    for name in ("demo", "demo-xl"):
        out[name] = make_lora(name, d / f"{name}.safetensors", rank=4, alpha=8.0)
        out[name + ":kohya"] = export_kohya(out[name], d / f"{name}-kohya.safetensors")
        out[name + ":bare"] = make_lora(name, d / f"{name}-bare.safetensors", metadata=False)
    return out


@pytest.mark.parametrize("name", ["demo", "demo-xl"])
def test_kohya_export_gives_the_same_image(loras, name):
    live = pipeline(name)
    base = render(live)
    check_fits(loras[name], live)
    live.load_lora_weights(peft_state_dict(read_lora(loras[name])), adapter_name="a")
    expected = render(live)
    assert diff(base, expected) > 0.01  # the LoRA really changes the picture

    other = pipeline(name)
    check_fits(loras[name + ":kohya"], other)
    other.load_lora_weights(str(loras[name + ":kohya"]), adapter_name="k")  # diffusers' own kohya reader
    assert diff(render(other), expected) < 1 / 255


@pytest.mark.parametrize("name", ["demo", "demo-xl"])
def test_kohya_alpha_metadata_and_names(loras, name):
    family, version = FAMILY[name]
    path = loras[name + ":kohya"]
    with safe_open(str(path), framework="pt") as fh:
        keys = list(fh.keys())
        meta = fh.metadata()
        alphas = [float(fh.get_tensor(k)) for k in keys if k.endswith(".alpha")]
    assert alphas and set(alphas) == {8.0}  # the configured alpha, not the rank
    assert meta["ss_base_model_version"] == version
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "8"
    assert meta["ss_network_module"] == "networks.lora"
    assert json.loads(meta["ss_tag_frequency"]) == {}
    assert ("xl" in meta["modelspec.architecture"]) == (family == "sdxl")
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)
    prefixes = {"lora_te1_", "lora_te2_"} if family == "sdxl" else {"lora_te_"}
    assert {p for p in ("lora_te_", "lora_te1_", "lora_te2_") if any(k.startswith(p) for k in keys)} == prefixes
    if family == "sdxl":  # kohya's sd-scripts name SDXL UNet blocks after the original layout
        assert any(k.startswith("lora_unet_input_blocks_") for k in keys)
        assert not any("down_blocks" in k or "up_blocks" in k for k in keys)
    else:
        assert any(k.startswith("lora_unet_down_blocks_") for k in keys)
    modules = kohya_module_map(pipeline(name))
    layers = {k.rsplit(".", 2)[0] if not k.endswith(".alpha") else k[: -len(".alpha")] for k in keys}
    assert layers <= set(modules), sorted(layers - set(modules))[:5]
    info = inspect_file(path)
    assert (info["format"], info["family"], info["ranks"], info["alphas"]) == ("kohya", family, [4], [8.0])


def test_read_lora_all_formats_agree(loras, tmp_path):
    a = read_lora(loras["demo"])
    k = read_lora(loras["demo:kohya"])
    assert a.modules.keys() == k.modules.keys()
    for n, m in a.modules.items():
        assert m.alpha == 8.0 and k.modules[n].alpha == 8.0
        assert torch.allclose(m.delta(), k.modules[n].delta(), atol=1e-6)
    # diffusers (peft naming) written by us reads back identically
    d = read_lora(write_diffusers(a, tmp_path / "d.safetensors"))
    for n, m in a.modules.items():
        assert torch.allclose(m.delta(), d.modules[n].delta(), atol=1e-6)


def test_sdxl_kohya_export_reads_back_with_its_recorded_base(loras):
    # demo-xl's UNet has one layer per block, SDXL 1.0 two: the original block numbers need the recorded base
    a, k = read_lora(loras["demo-xl"]), read_lora(loras["demo-xl:kohya"])
    assert a.modules.keys() == k.modules.keys()
    for n, m in a.modules.items():
        assert torch.allclose(m.delta(), k.modules[n].delta(), atol=1e-6), n


@pytest.mark.parametrize("lora,model", [("demo", "demo-xl"), ("demo-xl", "demo")])
@pytest.mark.parametrize("fmt", ["", ":kohya", ":bare"])
def test_wrong_family_is_refused_naming_both(loras, lora, model, fmt):
    pipe = pipeline(model)
    with pytest.raises(LoraStudioError) as err:
        check_fits(loras[lora + fmt], pipe)
    msg = str(err.value)
    assert "SDXL" in msg and "SD 1.x" in msg
    assert "size mismatch" not in msg


def test_different_text_width_is_refused(tmp_path):
    # An SD1-style LoRA whose text-encoder width differs from the model's (as SD 2.x vs SD 1.x).
    from lora_studio.core.lora_files import LoraFile, LoraModule

    lora = LoraFile(None, "diffusers", None, {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k":
            LoraModule(torch.randn(4, 1024), torch.randn(64, 4), 4.0)})
    path = write_diffusers(lora, tmp_path / "wide.safetensors")
    with pytest.raises(LoraStudioError) as err:
        check_fits(path, pipeline("demo"))
    assert "SD 2.x" in str(err.value) and "SD 1.x" in str(err.value)


def test_corrupted_lora_is_named(loras, tmp_path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(loras["demo"].read_bytes()[:-100])
    with pytest.raises(LoraStudioError, match="incomplete or corrupted") as err:
        read_lora(bad)
    assert "cut.safetensors" in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo", "demo-xl"])
def test_engine_trained_lora_kohya_export_matches(name, tmp_path):
    """A LoRA from the training engine (alpha != rank, text encoders too) and its kohya export: same image."""
    from PIL import Image, ImageDraw

    from lora_studio.config import TrainingConfig
    from lora_studio.core.training import train

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        im = Image.new("RGB", (64, 64), (250, 250, 250))
        ImageDraw.Draw(im).ellipse((8 + 4 * i, 8, 56, 56), fill=(220, 40, 40))
        im.save(data / f"img{i}.png")
        (data / f"img{i}.txt").write_text("a red circle in zebra style", encoding="utf-8")
    cfg = TrainingConfig(pretrained_model_name_or_path=name, train_data_dir=str(data), output_dir=str(tmp_path / "out"),
                         resolution=64, max_train_steps=3, checkpointing_steps=100, rank=4, lora_alpha=12.0,
                         learning_rate=5e-2, train_text_encoder=True, text_encoder_lr=5e-2, report_to="none",
                         sample_steps=1, seed=7)
    result = train(cfg)
    kohya = result["kohya_path"]
    family, version = FAMILY[name]
    with safe_open(kohya, framework="pt") as fh:
        assert fh.metadata()["ss_base_model_version"] == version
        assert {float(fh.get_tensor(k)) for k in fh.keys() if k.endswith(".alpha")} == {12.0}

    live = pipeline(name)
    base = render(live, prompt="a red circle in zebra style")
    live.load_lora_weights(peft_state_dict(read_lora(result["adapter_path"])), adapter_name="a")
    expected = render(live, prompt="a red circle in zebra style")
    assert diff(base, expected) > 1 / 255
    other = pipeline(name)
    check_fits(kohya, other)
    other.load_lora_weights(kohya, adapter_name="k")
    assert diff(render(other, prompt="a red circle in zebra style"), expected) < 1 / 255
