"""The demo world's judge: a small CNN that reads shape, colour, subject yes/no and style yes/no.

It is how tests and benchmarks measure what a demo model or a LoRA drew, deterministically:
``Judge.load().score(images, prompts)`` compares each picture with what its prompt asked for.

Besides the yes/no subject share, ``subject_scores`` places each picture on a continuous scale: its subject
logit, 0 at the mean of plain pictures of the world (the renderer's base shapes) and 1 at the mean of the
shipped subject set, clipped to [0, 1]. A LoRA blended in at weight 0.25 / 0.5 / 0.75 moves the pictures part
of the way; the share, a threshold, only flips once they cross it (a cliff, not a blend).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from lora_studio.core.demo.renderer import COLOURS, SHAPES, SIZE, STYLE_WORD
from lora_studio.errors import LoraStudioError
from lora_studio.paths import resource

WEIGHTS = "judge.safetensors"
CONFIG = "judge.json"
PLAIN_SEED, PLAIN_COUNT = 50, 64  # the plain end of the subject scale: a renderer stream no training used


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU(),
        nn.MaxPool2d(2),
    )


class JudgeNet(nn.Module):
    def __init__(self, widths: Sequence[int] = (32, 64, 96, 128), n_shapes: int = len(SHAPES),
                 n_colours: int = len(COLOURS)):
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers.append(_block(cin, w))
            cin = w
        self.features = nn.Sequential(*layers)
        self.shape = nn.Linear(cin, n_shapes)
        self.colour = nn.Linear(cin, n_colours)
        self.subject = nn.Linear(cin, 1)
        self.style = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x).mean(dim=(2, 3))
        return {"shape": self.shape(h), "colour": self.colour(h), "subject": self.subject(h)[:, 0],
                "style": self.style(h)[:, 0]}


def to_tensor(images: Iterable) -> torch.Tensor:
    """PIL images, paths or uint8 HxWx3 arrays -> float tensor (N, 3, 64, 64) in [-1, 1]."""
    arrays = []
    for im in images:
        if isinstance(im, (str, Path)):
            im = Image.open(im)
        if isinstance(im, Image.Image):
            im = im.convert("RGB")
            if im.size != (SIZE, SIZE):
                im = im.resize((SIZE, SIZE), Image.Resampling.BOX)
            im = np.asarray(im)
        arrays.append(np.asarray(im, dtype=np.uint8))
    if not arrays:
        return torch.zeros((0, 3, SIZE, SIZE))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


_COLOUR_WORDS = {c: c for c in COLOURS} | {"violet": "purple", "turquoise": "cyan"}


def _singular(word: str) -> str:
    for cut in ("es", "s"):
        if word.endswith(cut) and word[: -len(cut)] in SHAPES:
            return word[: -len(cut)]
    return word


def parse_prompt(prompt: str) -> dict:
    """What a prompt asks of the world: shape, colour (None where it names none), subject, style."""
    words = re.findall(r"[a-z]+", prompt.lower())
    shape = next((s for s in map(_singular, words) if s in SHAPES), None)
    colour = next((_COLOUR_WORDS[w] for w in words if w in _COLOUR_WORDS), None)
    return {"shape": shape, "colour": colour, "subject": "sks" in words,
            "style": STYLE_WORD.split()[0] in words}


class Judge:
    def __init__(self, net: JudgeNet, config: dict):
        self.net = net.eval()
        self.config = config
        self.shapes = list(config["shapes"])
        self.colours = list(config["colours"])
        self._scale: tuple[float, float] | None = None  # subject logit of plain pictures, of the subject set

    @classmethod
    def load(cls, folder: str | Path | None = None, device: str = "cpu") -> "Judge":
        from safetensors.torch import load_file

        folder = Path(folder) if folder else resource("judge")
        cfg_path, weights = folder / CONFIG, folder / WEIGHTS
        if not weights.is_file() or not cfg_path.is_file():
            raise LoraStudioError(f"the demo judge is missing: {weights}",
                                  "reinstall LoRA Studio, or retrain it with `python -m tools.train_world` (a maintainer script in the source repository).")
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
        net = JudgeNet(config["widths"], len(config["shapes"]), len(config["colours"]))
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        net.load_state_dict(state)
        return cls(net.to(device), config)

    @torch.no_grad()
    def probabilities(self, images: Iterable, batch_size: int = 256) -> dict[str, np.ndarray]:
        x = to_tensor(images)
        device = next(self.net.parameters()).device
        outs: dict[str, list] = {"shape": [], "colour": [], "subject": [], "style": []}
        for i in range(0, len(x), batch_size):
            logits = self.net(x[i:i + batch_size].to(device))
            outs["shape"].append(logits["shape"].softmax(-1).cpu())
            outs["colour"].append(logits["colour"].softmax(-1).cpu())
            outs["subject"].append(logits["subject"].sigmoid().cpu())
            outs["style"].append(logits["style"].sigmoid().cpu())
        if not len(x):
            return {"shape": np.zeros((0, len(self.shapes))), "colour": np.zeros((0, len(self.colours))),
                    "subject": np.zeros(0), "style": np.zeros(0)}
        return {k: torch.cat(v).numpy() for k, v in outs.items()}

    @torch.no_grad()
    def subject_logits(self, images: Iterable, batch_size: int = 256) -> np.ndarray:
        x = to_tensor(images)
        device = next(self.net.parameters()).device
        out = [self.net(x[i:i + batch_size].to(device))["subject"].cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros(0)

    def subject_scale(self) -> tuple[float, float]:
        """Mean subject logit of plain renders (score 0) and of the shipped subject pictures (score 1)."""
        if self._scale is None:
            from lora_studio.core.demo import demo_dataset_path
            from lora_studio.core.demo.renderer import render_array

            plain, _ = render_array(PLAIN_SEED, 0, PLAIN_COUNT, "base")
            subject = sorted(demo_dataset_path("subject").glob("*.png"))
            self._scale = (float(self.subject_logits(list(plain)).mean()), float(self.subject_logits(subject).mean()))
        return self._scale

    def subject_scores(self, images: Iterable) -> np.ndarray:
        """Each picture's place between a plain shape (0) and the subject (1): the continuous subject score."""
        lo, hi = self.subject_scale()
        return np.clip((self.subject_logits(images) - lo) / (hi - lo), 0.0, 1.0)

    def predict(self, images: Iterable) -> list[dict]:
        p = self.probabilities(images)
        out = []
        for i in range(len(p["subject"])):
            s, c = int(p["shape"][i].argmax()), int(p["colour"][i].argmax())
            out.append({
                "shape": self.shapes[s], "shape_p": float(p["shape"][i][s]),
                "colour": self.colours[c], "colour_p": float(p["colour"][i][c]),
                "subject": bool(p["subject"][i] > 0.5), "subject_p": float(p["subject"][i]),
                "style": bool(p["style"][i] > 0.5), "style_p": float(p["style"][i]),
            })
        return out

    def score(self, images: Sequence, prompts: str | Sequence[str]) -> dict:
        """Agreement of each picture with its prompt. One prompt applies to all pictures.

        Accuracies count only the pictures whose prompt names that attribute (None where none does);
        subject_share / style_share are the shares of all pictures judged to show the subject / the style;
        subject_score is the mean continuous subject score (``subject_scores``).
        """
        images = list(images)
        if isinstance(prompts, str):
            prompts = [prompts] * len(images)
        if len(prompts) != len(images):
            raise LoraStudioError(f"{len(images)} images but {len(prompts)} prompts",
                                  "give one prompt for all images, or one per image.")
        preds = self.predict(images)
        continuous = self.subject_scores(images) if images else np.zeros(0)
        rows, hits = [], {"shape": [], "colour": [], "subject": [], "style": []}
        for prompt, pred, cont in zip(prompts, preds, continuous):
            pred["subject_score"] = float(cont)
            want = parse_prompt(prompt)
            match = {}
            for key in ("shape", "colour"):
                if want[key] is not None:
                    match[key] = pred[key] == want[key]
                    hits[key].append(match[key])
            for key in ("subject", "style"):
                match[key] = pred[key] == want[key]
                hits[key].append(match[key])
            rows.append({"prompt": prompt, "expected": want, "predicted": pred, "match": match})

        def mean(v):
            return float(np.mean(v)) if v else None

        n = len(preds)
        return {
            "n": n,
            "colour_accuracy": mean(hits["colour"]),
            "shape_accuracy": mean(hits["shape"]),
            "subject_accuracy": mean(hits["subject"]),
            "style_accuracy": mean(hits["style"]),
            "subject_share": float(np.mean([p["subject"] for p in preds])) if n else None,
            "style_share": float(np.mean([p["style"] for p in preds])) if n else None,
            "subject_score": float(np.mean(continuous)) if n else None,
            "per_prompt": rows,
        }
