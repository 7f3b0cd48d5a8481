"""kohya files as sd-scripts writes them (conv layers, both text encoders) read by `convert` and `merge`
without a base model. The key names are written out by hand from kohya's layout (SDXL: the original
input_blocks / middle_block / output_blocks numbering), not produced by LoRA Studio's own writer."""

import pytest
import torch
from safetensors.torch import save_file

from lora_studio.cli import main
from lora_studio.core.lora_files import default_unet_config, read_lora

# kohya name -> the diffusers module it must land on
SDXL_KEYS = {
    "lora_unet_input_blocks_4_0_in_layers_2": "unet.down_blocks.1.resnets.0.conv1",
    "lora_unet_input_blocks_4_0_out_layers_3": "unet.down_blocks.1.resnets.0.conv2",
    "lora_unet_input_blocks_4_0_skip_connection": "unet.down_blocks.1.resnets.0.conv_shortcut",
    "lora_unet_input_blocks_4_0_emb_layers_1": "unet.down_blocks.1.resnets.0.time_emb_proj",
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k":
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
    "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q":
        "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q",
    "lora_unet_output_blocks_0_0_in_layers_2": "unet.up_blocks.0.resnets.0.conv1",
    "lora_unet_output_blocks_2_1_transformer_blocks_0_ff_net_2":
        "unet.up_blocks.0.attentions.2.transformer_blocks.0.ff.net.2",
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj":
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
    "lora_te2_text_model_encoder_layers_3_mlp_fc1": "text_encoder_2.text_model.encoder.layers.3.mlp.fc1",
}
SD1_KEYS = {
    "lora_unet_down_blocks_1_resnets_0_conv1": "unet.down_blocks.1.resnets.0.conv1",
    "lora_unet_down_blocks_1_resnets_0_conv_shortcut": "unet.down_blocks.1.resnets.0.conv_shortcut",
    "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_v":
        "unet.up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_v",
    "lora_unet_mid_block_resnets_1_time_emb_proj": "unet.mid_block.resnets.1.time_emb_proj",
    "lora_te_text_model_encoder_layers_11_mlp_fc2": "text_encoder.text_model.encoder.layers.11.mlp.fc2",
}
# weight shapes of the real models' layers (SD 1.5, SDXL 1.0 with CLIP-L and OpenCLIP-bigG)
TE_SHAPES = {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj": (768, 768),
             "text_encoder_2.text_model.encoder.layers.3.mlp.fc1": (5120, 1280),
             "text_encoder.text_model.encoder.layers.11.mlp.fc2": (768, 3072)}


def _unet_shapes(family):
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():  # the real architecture's shapes without its memory
        unet = UNet2DConditionModel.from_config(default_unet_config(family))
    return {f"unet.{n}": tuple(m.weight.shape) for n, m in unet.named_modules() if hasattr(m, "weight")
            and m.weight is not None}


def _kohya_file(path, family, keys, rank=4, alpha=2.0):
    torch.manual_seed(3)
    shapes = {**_unet_shapes(family), **TE_SHAPES}
    tensors, expected = {}, {}
    for kohya, module in keys.items():
        shape = shapes[module]
        down = torch.randn(rank, shape[1], *shape[2:]) * 0.1
        up = torch.randn(shape[0], rank, *([1, 1] if len(shape) == 4 else [])) * 0.1
        tensors.update({f"{kohya}.lora_down.weight": down, f"{kohya}.lora_up.weight": up,
                        f"{kohya}.alpha": torch.tensor(alpha)})
        expected[module] = (up.reshape(shape[0], rank) @ down.reshape(rank, -1)).reshape(shape) * (alpha / rank)
    version = "sdxl_base_v1-0" if family == "sdxl" else "sd_v1"
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora", "ss_base_model_version": version})
    return expected


def _assert_deltas(path, expected):
    lora = read_lora(path)
    assert set(lora.modules) == set(expected)
    for name, delta in expected.items():
        assert torch.allclose(lora.modules[name].delta(), delta, atol=1e-5), name


@pytest.mark.parametrize("family,keys", [("sdxl", SDXL_KEYS), ("sd1", SD1_KEYS)])
def test_convert_and_merge_read_kohya_files_without_a_model(family, keys, tmp_path, capsys):
    src = tmp_path / "kohya.safetensors"
    expected = _kohya_file(src, family, keys)
    _assert_deltas(src, expected)

    assert main(["convert", str(src), "--to", "diffusers", "--out", str(tmp_path / "d.safetensors")]) == 0
    _assert_deltas(tmp_path / "d.safetensors", expected)
    assert main(["convert", str(tmp_path / "d.safetensors"), "--to", "kohya", "--out",
                 str(tmp_path / "k.safetensors")]) == 0
    _assert_deltas(tmp_path / "k.safetensors", expected)

    assert main(["merge", "--lora", f"{src}:0.5", "--out", str(tmp_path / "m.safetensors")]) == 0
    _assert_deltas(tmp_path / "m.safetensors", {n: d * 0.5 for n, d in expected.items()})
    assert main(["merge", "--lora", f"{src}:1", "--format", "kohya", "--out", str(tmp_path / "mk.safetensors")]) == 0
    _assert_deltas(tmp_path / "mk.safetensors", expected)
    assert "Traceback" not in capsys.readouterr().err
