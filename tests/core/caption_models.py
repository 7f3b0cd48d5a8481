"""Tiny captioning models built from configs inside the tests: a random BLIP and an ONNX booru tagger."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TAGS = [("9999", "general", 9), ("1", "red_hair", 0), ("2", "blue_sky", 0), ("3", "^_^", 0),
        ("4", "hakurei_reimu", 4)]


def build_blip(folder: Path, seed: int = 0):
    """A random-init BLIP captioner with a 13-word tokenizer, saved as save_pretrained writes a real one."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "red", "blue", "circle", "square",
             "photo", "of"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    config = BlipConfig(
        text_config=dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64, bos_token_id=5, pad_token_id=0,
                         sep_token_id=3, eos_token_id=3),
        vision_config=dict(hidden_size=32, image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=37),
        projection_dim=32)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def build_tagger(folder: Path, size: int = 16) -> Path:
    """An ONNX 'tagger' whose tags follow the picture's mean colour (input BGR 0-255, NHWC, as WD14's).

    red_hair fires on red, blue_sky on blue, ^_^ is always 0.5, the character hakurei_reimu reaches ~0.78
    on red (under the default 0.85), the rating is always high (and never written).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weights = np.zeros((3, len(TAGS)), np.float32)
    bias = np.zeros(len(TAGS), np.float32)
    bias[0] = 5.0
    weights[2, 1], bias[1] = 0.05, -6.0  # channel 2 is red in BGR
    weights[0, 2], bias[2] = 0.05, -6.0
    weights[2, 4], bias[4] = 0.05, -11.5
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["mean", "W"], ["logits0"]),
             helper.make_node("Add", ["logits0", "b"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["output"])]
    graph = helper.make_graph(
        nodes, "tagger", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(TAGS)])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "selected_tags.csv").write_text(
        "tag_id,name,category,count\n" + "".join(f"{i},{n},{c},100\n" for i, n, c in TAGS), encoding="utf-8")
    return folder
