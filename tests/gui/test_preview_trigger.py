"""The Preview tab offers the trigger phrase a LoRA file records when the LoRA is added."""

import torch
from safetensors.torch import save_file


def _lora(path, trigger=None):
    meta = {"ss_base_model_version": "sd_v1", **({"modelspec.trigger_phrase": trigger} if trigger else {})}
    layer = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{layer}.lora_down.weight": torch.zeros(2, 32), f"{layer}.lora_up.weight": torch.zeros(32, 2)},
              str(path), metadata=meta)
    return str(path)


def test_adding_a_lora_offers_its_trigger_phrase(qtbot, make_window, tmp_path):
    tab = make_window().preview_tab
    tab.prompt.setPlainText("a red car")
    tab.add_lora(_lora(tmp_path / "plain.safetensors"))
    assert not tab.trigger_button.isVisibleTo(tab)  # nothing recorded, nothing offered
    tab.add_lora(_lora(tmp_path / "dog.safetensors", "a photo of sks dog"))
    assert tab.trigger_button.isVisibleTo(tab) and "sks dog" in tab.trigger_button.text()
    tab.trigger_button.click()
    assert tab.prompt.toPlainText() == "a photo of sks dog" and not tab.trigger_button.isVisibleTo(tab)
    tab.add_lora(_lora(tmp_path / "again.safetensors", "sks dog"))  # already in the prompt: no offer
    assert not tab.trigger_button.isVisibleTo(tab)
