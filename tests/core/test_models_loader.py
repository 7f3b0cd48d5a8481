"""Base models: family detection from headers, folders, demo names; safe and clear failures."""


import pytest
import torch
from safetensors.torch import save_file

from lora_studio.core.models.loader import detect_family, load_pipeline, read_header, resolve_model
from lora_studio.errors import LoraStudioError

T = torch.zeros(1)


def _ckpt(path, keys):
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path))
    return path


SD1 = {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
       "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (10, 8)}
SD2 = {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
       "cond_stage_model.model.ln_final.weight": (8,)}
SDXL = {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (8,),
        "conditioner.embedders.1.model.ln_final.weight": (8,)}


@pytest.mark.parametrize("keys,family,variant", [
    (SD1, "sd1", "base"), (SD2, "sd2", "v"), (SDXL, "sdxl", "base"),
    ({**SD1, "model.diffusion_model.input_blocks.0.0.weight": (8, 9, 3, 3)}, "sd1", "inpaint"),
    ({**SDXL, "model.diffusion_model.input_blocks.0.0.weight": (8, 9, 3, 3)}, "sdxl", "inpaint"),
])
def test_single_file_family_from_header(tmp_path, keys, family, variant):
    ref = resolve_model(_ckpt(tmp_path / "m.safetensors", keys))
    assert (ref.kind, ref.family, ref.variant) == ("single_file", family, variant)


@pytest.mark.parametrize("keys,arch", [
    ({"model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight": (3, 3)}, "Stable Diffusion 3"),
    ({"double_blocks.0.img_attn.norm.key_norm.scale": (3,)}, "Flux"),
    ({"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
      "conditioner.embedders.0.model.ln_final.weight": (8,)}, "refiner"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 8)}, "a LoRA"),
])
def test_unsupported_architectures_say_so(tmp_path, keys, arch):
    with pytest.raises(LoraStudioError, match="not supported yet") as err:
        detect_family(_ckpt(tmp_path / "x.safetensors", keys))
    assert arch in str(err.value)


def test_truncated_safetensors_is_reported_as_corrupted(tmp_path):
    path = _ckpt(tmp_path / "m.safetensors", SD1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(LoraStudioError, match="incomplete or corrupted") as err:
        resolve_model(path)
    assert "m.safetensors" in str(err.value)
    path.write_bytes(b"\x00\x10garbage")
    with pytest.raises(LoraStudioError, match="incomplete or corrupted"):
        read_header(path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": T}, "x": _Evil()}, str(path))
    with pytest.raises(LoraStudioError, match="refused"):
        read_header(path)
    ok = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {k: torch.zeros(s) for k, s in SD1.items()}}, str(ok))
    assert resolve_model(ok).family == "sd1"


def test_folder_without_model_index_names_what_is_missing(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(LoraStudioError, match="model_index.json") as err:
        resolve_model(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_missing_path(tmp_path):
    with pytest.raises(LoraStudioError, match="no such"):
        resolve_model(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("name,cls,family", [("demo", "StableDiffusionPipeline", "sd1"),
                                             ("demo-xl", "StableDiffusionXLPipeline", "sdxl")])
def test_demo_and_diffusers_folder_load(tmp_path, name, cls, family):
    pipe = load_pipeline(name)
    assert type(pipe).__name__ == cls
    pipe.save_pretrained(str(tmp_path / "m"))
    ref = resolve_model(tmp_path / "m")
    assert (ref.kind, ref.family) == ("diffusers", family)
    again = load_pipeline(tmp_path / "m")
    assert type(again).__name__ == cls
    a = dict(pipe.unet.named_parameters())
    for k, v in again.unet.named_parameters():
        assert torch.equal(v, a[k])



def test_training_reads_the_vae_in_fp32_from_its_file_in_the_same_load(tmp_path):
    """A 16-bit folder loads for a bf16 run in one read: the UNet and text encoder in bf16, the VAE in fp32 with
    exactly the file's values (diffusers' per-component precision; before, the VAE was read a second time)."""
    from lora_studio.core.training.models import load_models

    pipe = load_pipeline("demo").to(torch.float16)
    pipe.save_pretrained(str(tmp_path / "m"))
    models = load_models(str(tmp_path / "m"), torch.bfloat16)
    assert (models.unet.dtype, models.text_encoders[0].dtype, models.vae.dtype) == \
        (torch.bfloat16, torch.bfloat16, torch.float32)
    vae16 = dict(pipe.vae.named_parameters())
    for k, v in models.vae.named_parameters():
        assert torch.equal(v, vae16[k].float()), k
    unet16 = dict(pipe.unet.named_parameters())
    for k, v in models.unet.named_parameters():
        assert torch.equal(v, unet16[k].to(torch.bfloat16)), k
