"""Image-to-text captioners through transformers: BLIP, BLIP-2, GIT, Florence-2 and their kind.

The folder holds what ``save_pretrained`` writes (config.json, weights, the processor's files); the
class comes from config.json through AutoModelForImageTextToText, the processor through AutoProcessor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lora_studio.core.caption.base import Captioner, clean
from lora_studio.errors import LoraStudioError

# Florence-2 does nothing without a task token; the others caption from the picture alone.
TASK_PROMPTS = {"florence2": "<MORE_DETAILED_CAPTION>"}


def _model_class():
    import transformers

    for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
        if hasattr(transformers, name):
            return getattr(transformers, name)
    raise LoraStudioError(f"transformers {transformers.__version__} cannot load image-to-text models.",
                          "run `pip install -U transformers`.")


def _dtype_key() -> str:
    import transformers
    from packaging.version import Version

    # transformers renamed from_pretrained's torch_dtype to dtype in 4.56.
    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


class ImageToTextCaptioner(Captioner):
    batch_size = 8

    def __init__(self, folder: str | Path, *, device: str | None = None, prompt: str | None = None,
                 max_new_tokens: int = 40, num_beams: int = 3):
        import torch
        from transformers import AutoConfig, AutoProcessor

        folder = Path(folder)
        self.name = folder.name
        try:
            config = AutoConfig.from_pretrained(folder)
            self.processor = AutoProcessor.from_pretrained(folder)
            model_cls = _model_class()
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            self.model = model_cls.from_pretrained(folder, **{_dtype_key(): self.dtype}).to(self.device).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise LoraStudioError(f"{folder} could not be loaded as an image-to-text model: {exc}",
                                  "give a folder that holds config.json, the weights and the processor files "
                                  "(preprocessor_config.json, tokenizer) of a BLIP / BLIP-2 / GIT / Florence-2 "
                                  "model, as save_pretrained writes them.") from exc
        self.prompt = prompt if prompt is not None else TASK_PROMPTS.get(config.model_type, "")
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams

    def caption(self, images: Sequence) -> list[str]:
        import torch

        kwargs = {"images": list(images), "return_tensors": "pt"}
        if self.prompt:
            kwargs["text"] = [self.prompt] * len(images)
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        # Conditional captioning (BLIP with a prompt) repeats the prompt before its own words.
        return [clean(t[len(self.prompt):] if self.prompt and t.startswith(self.prompt) else t) for t in texts]
