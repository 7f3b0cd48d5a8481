"""LyCORIS files with hand-written key names (as ComfyUI's weight_adapter/loha.py and lokr.py and A1111's
network_hada / network_lokr read them): the weight change and scale each reader computes, merge's refusal,
and how kohya counts caption tags."""

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from lora_studio.core.inference.merge import merge
from lora_studio.core.lora_files import convert, inspect_file, read_lora
from lora_studio.core.lora_files.metadata import caption_tags, tag_frequency, trigger_phrase
from lora_studio.errors import LoraStudioError

ATTN = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # SD 1.5: 320 -> 320
CONV = "lora_unet_down_blocks_1_resnets_0_conv1"  # SD 1.5: 320 -> 640, 3x3
TE = "lora_te_text_model_encoder_layers_0_self_attn_v_proj"  # CLIP-L: 768 -> 768
META = {"ss_base_model_version": "sd_v1"}


def _save(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=META)
    return path


def test_loha_names_and_scale(tmp_path):
    torch.manual_seed(0)
    t = {}
    expected = {}
    for layer, out, inp, plain, shape in [(ATTN, 320, 320, "unet.down_blocks.0.attentions.0.transformer_blocks.0"
                                          ".attn1.to_q", (320, 320)),
                                         (CONV, 640, 320 * 9, "unet.down_blocks.1.resnets.0.conv1", (640, 320, 3, 3)),
                                         (TE, 768, 768, "text_encoder.text_model.encoder.layers.0.self_attn.v_proj",
                                          (768, 768))]:
        w1a, w1b, w2a, w2b = torch.randn(out, 4), torch.randn(4, inp), torch.randn(out, 4), torch.randn(4, inp)
        t.update({f"{layer}.hada_w1_a": w1a, f"{layer}.hada_w1_b": w1b, f"{layer}.hada_w2_a": w2a,
                  f"{layer}.hada_w2_b": w2b, f"{layer}.alpha": torch.tensor(2.0)})
        expected[plain] = ((w1a @ w1b) * (w2a @ w2b) * (2.0 / 4)).reshape(shape)  # alpha / w1_b's rank
    path = _save(tmp_path / "loha.safetensors", t)
    lora = read_lora(path)
    assert lora.network == "loha" and set(lora.modules) == set(expected)
    for name, delta in expected.items():
        assert torch.allclose(lora.modules[name].delta(), delta, rtol=1e-4, atol=1e-3), name
        pair = lora.modules[name].as_lora()  # the preview's exact LoRA form of the same change
        assert torch.allclose(pair.delta(), delta, rtol=1e-3, atol=1e-2), name
    info = inspect_file(path)
    assert (info["network"], info["ranks"], info["alphas"], info["layers"]) == (
        "LoHa", [4], [2.0], {"unet": 2, "text_encoder": 1})


def test_lokr_scale_follows_the_decomposed_factor(tmp_path):
    torch.manual_seed(1)
    w1, w2a, w2b = torch.randn(4, 4), torch.randn(80, 2), torch.randn(2, 80)
    full1, full2 = torch.randn(4, 4), torch.randn(192, 192)
    k_proj = TE.replace("v_proj", "k_proj")
    path = _save(tmp_path / "lokr.safetensors", {
        f"{ATTN}.lokr_w1": w1, f"{ATTN}.lokr_w2_a": w2a, f"{ATTN}.lokr_w2_b": w2b, f"{ATTN}.alpha": torch.tensor(1.0),
        f"{k_proj}.lokr_w1": full1, f"{k_proj}.lokr_w2": full2, f"{k_proj}.alpha": torch.tensor(7.0)})
    lora = read_lora(path)
    attn = lora.modules["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
    assert torch.allclose(attn.delta(), torch.kron(w1, w2a @ w2b) * 0.5, atol=1e-4)  # alpha 1 / rank 2
    te = lora.modules["text_encoder.text_model.encoder.layers.0.self_attn.k_proj"]
    # no decomposed factor: the readers ignore alpha (scale 1)
    assert torch.allclose(te.delta(), torch.kron(full1, full2), atol=1e-4)
    for m in (attn, te):  # the preview's exact LoRA form: by construction (decomposed w2) and by SVD
        assert torch.allclose(m.as_lora().delta(), m.delta(), rtol=1e-3, atol=1e-3)
    assert inspect_file(path)["network"] == "LoKr"


def test_peft_lokr_scale_is_folded_for_the_readers():
    from lora_studio.core.lora_files.lycoris import from_peft

    w1, w2 = torch.randn(4, 4), torch.randn(8, 8)
    m = from_peft("lokr", {"lokr_w1": w1, "lokr_w2": w2}, alpha=12.0, rank=4)
    # peft: kron(w1, w2) * alpha / r; the file's readers: scale 1 without a decomposed factor
    assert m.scale == 1.0 and torch.allclose(m.tensors["lokr_w1"], w1 * 3.0)
    assert torch.allclose(m.delta(), torch.kron(w1, w2) * 3.0)


def test_merge_and_diffusers_conversion_refuse_lycoris_by_name(tmp_path):
    path = _save(tmp_path / "style.safetensors", {f"{ATTN}.hada_w1_a": torch.randn(320, 2),
                                                  f"{ATTN}.hada_w1_b": torch.randn(2, 320),
                                                  f"{ATTN}.hada_w2_a": torch.randn(320, 2),
                                                  f"{ATTN}.hada_w2_b": torch.randn(2, 320)})
    with pytest.raises(LoraStudioError) as err:
        merge([(path, 1.0)])
    assert "style.safetensors is a LyCORIS LoHa file" in str(err.value) and "--fuse-out" in err.value.advice
    with pytest.raises(LoraStudioError, match="style.safetensors is a LyCORIS LoHa file"):
        convert(path, "diffusers", tmp_path / "d.safetensors")


def test_tag_counts_as_kohya_per_caption_folder():
    assert caption_tags("1girl, red hair,  smile ,") == ["1girl", "red hair", "smile"]
    assert caption_tags("a photo of sks dog") == ["a", "photo", "of", "sks", "dog"]
    ex = [SimpleNamespace(path=f"/d/10_sks dog/{i}.png", caption="sks dog, grass") for i in range(3)]
    ex += ex  # repeats: each picture counts once
    ex.append(SimpleNamespace(path="/d/reg/0.png", caption="a dog"))
    assert tag_frequency(ex) == {"10_sks dog": {"sks dog": 3, "grass": 3}, "reg": {"a": 1, "dog": 1}}
    db = SimpleNamespace(mode="dreambooth", instance_prompt=" a photo of sks dog ", caption_prefix="")
    style = SimpleNamespace(mode="style", instance_prompt="", caption_prefix="zebra style, ")
    assert trigger_phrase(db) == "a photo of sks dog" and trigger_phrase(style) == "zebra style"
