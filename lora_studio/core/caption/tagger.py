"""Booru taggers (WD14 / WD v3 by SmilingWolf and their kind) through onnxruntime.

A tagger folder holds ``model.onnx`` and ``selected_tags.csv`` (tag_id, name, category, count).
The model takes a square BGR picture, 0-255, NHWC, and gives each tag a probability; category 0 is a
general tag, 4 a character, 9 a rating (ratings are not written into captions).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from lora_studio.core.caption.base import Captioner
from lora_studio.errors import LoraStudioError

MODEL_FILE, TAGS_FILE = "model.onnx", "selected_tags.csv"
GENERAL, CHARACTER, RATING = 0, 4, 9
# Kaomoji keep their underscores: "^_^" means something, "^ ^" does not.
KAOMOJI = {"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o", "@_@",
           "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"}


def read_tags(path: Path) -> tuple[list[str], np.ndarray]:
    """Tag names (underscores as spaces) and their categories, in the model's output order."""
    names, categories = [], []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                name = row["name"]
                names.append(name if name in KAOMOJI else name.replace("_", " "))
                categories.append(int(row["category"]))
    except (OSError, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise LoraStudioError(f"{path} is not a tagger's tag list ({exc}).",
                              "use the selected_tags.csv that came with the model (columns tag_id, name, "
                              "category, count).") from exc
    return names, np.asarray(categories)


class OnnxTagger(Captioner):
    batch_size = 8

    def __init__(self, folder: str | Path, *, general_threshold: float = 0.35, character_threshold: float = 0.85,
                 providers: Sequence[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise LoraStudioError("booru taggers need the 'onnxruntime' package, which is not installed.",
                                  "run `pip install onnxruntime` (or onnxruntime-gpu).") from exc
        folder = Path(folder)
        self.name = folder.name
        model, tags = folder / MODEL_FILE, folder / TAGS_FILE
        for path in (model, tags):
            if not path.is_file():
                raise LoraStudioError(f"{path} is missing.", f"a tagger folder needs {MODEL_FILE} and {TAGS_FILE}.")
        self.tags, self.categories = read_tags(tags)
        self.general_threshold, self.character_threshold = general_threshold, character_threshold
        available = ort.get_available_providers()
        wanted = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(model), providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise LoraStudioError(f"{model} could not be loaded by onnxruntime: {exc}",
                                  "download the model again (the file may be truncated).") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = int(inp.shape[1]) if isinstance(inp.shape[1], int) else 448
        self.fixed_batch = isinstance(inp.shape[0], int) and inp.shape[0] == 1
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self.tags):
            raise LoraStudioError(f"{model} scores {width} tags but {tags} lists {len(self.tags)}.",
                                  f"use the {TAGS_FILE} that came with this model.")

    def _prepare(self, image) -> np.ndarray:
        from PIL import Image

        image = image.convert("RGB")
        side = max(image.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))  # padded with white, as the taggers were trained
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        square = square.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return np.asarray(square, dtype=np.float32)[:, :, ::-1]  # RGB -> BGR

    def scores(self, images: Sequence) -> np.ndarray:
        batch = np.stack([self._prepare(im) for im in images])
        if self.fixed_batch:
            return np.concatenate([self.session.run(None, {self.input_name: x[None]})[0] for x in batch])
        return self.session.run(None, {self.input_name: batch})[0]

    def tag_lists(self, images: Sequence) -> list[list[str]]:
        """Character tags first, then general tags, each by falling probability."""
        out = []
        for probs in self.scores(images):
            chosen = []
            for category, threshold in ((CHARACTER, self.character_threshold), (GENERAL, self.general_threshold)):
                hits = np.nonzero((self.categories == category) & (probs >= threshold))[0]
                chosen += [self.tags[i] for i in hits[np.argsort(-probs[hits], kind="stable")]]
            out.append(chosen)
        return out

    def caption(self, images: Sequence) -> list[str]:
        return [", ".join(tags) for tags in self.tag_lists(images)]
