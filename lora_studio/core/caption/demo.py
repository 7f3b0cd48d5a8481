"""The demo world's captioner: the demo judge reads colour and shape, and says "a red circle"."""

from __future__ import annotations

from typing import Sequence

from lora_studio.core.caption.base import Captioner
from lora_studio.core.demo.judge import Judge
from lora_studio.core.demo.renderer import CLASS_PROMPT, STYLE_WORD


class DemoCaptioner(Captioner):
    name = "demo"
    batch_size = 64

    def __init__(self, judge: Judge | None = None):
        self.judge = judge or Judge.load()

    def caption(self, images: Sequence) -> list[str]:
        out = []
        for pred in self.judge.predict(images):
            if pred["subject"]:
                out.append(CLASS_PROMPT)  # the subject has no colour or shape name: it gets the class words
            elif pred["style"]:
                out.append(f"a {pred['colour']} {pred['shape']} in {STYLE_WORD}")
            else:
                out.append(f"a {pred['colour']} {pred['shape']}")
        return out
