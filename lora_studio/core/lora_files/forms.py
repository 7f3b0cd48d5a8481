"""The plain form every LoRA file is read into, and the facts its keys and metadata tell."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lora_studio.core.models.loader import family_name, read_header  # noqa: F401  (family_name re-exported)

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
KOHYA_TE = {"sd1": {"text_encoder": "lora_te_"}, "sd2": {"text_encoder": "lora_te_"},
            "sdxl": {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}}
BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
MODELSPEC_ARCH = {"sd1": "stable-diffusion-v1/lora", "sd2": "stable-diffusion-v2-768-v/lora",
                  "sdxl": "stable-diffusion-xl-v1-base/lora"}
CROSS_WIDTH_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_PAIR_SUFFIXES = [(".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"),
                  (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
                  (".lora_down.weight", ".lora_up.weight")]


@dataclass
class LoraModule:
    down: object  # torch.Tensor (r, in) or (r, in, kh, kw)
    up: object  # torch.Tensor (out, r) or (out, r, 1, 1)
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self):
        """The full weight change scale * up @ down, shaped like the base layer's weight."""
        d = self.down.reshape(self.rank, -1).float()
        u = self.up.reshape(self.up.shape[0], self.rank).float()
        w = (u @ d) * self.scale
        return w.reshape(self.up.shape[0], *self.down.shape[1:]) if self.down.ndim == 4 else w


@dataclass
class LoraFile:
    path: Path | None
    format: str  # "diffusers" | "kohya" | "lycoris"
    family: str | None  # "sd1" | "sd2" | "sdxl" | None when the file does not say
    modules: dict[str, LoraModule]  # LycorisModule for LoHa / LoKr files
    metadata: dict[str, str] = field(default_factory=dict)
    network: str = "lora"  # "lora" | "loha" | "lokr"

    @property
    def ranks(self) -> list[int]:
        return sorted({m.rank for m in self.modules.values()})

    @property
    def alphas(self) -> list[float]:
        return sorted({m.alpha for m in self.modules.values()})


# ----------------------------------------------------------------------------- header-level facts

def _header(path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    return read_header(path)


def file_format(keys) -> str:
    keys = list(keys)
    if any(".hada_w1_a" in k or ".lokr_w1" in k for k in keys):
        return "lycoris"
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys):
        return "kohya"
    if any(".lora_A." in k or ".lora.down." in k or ".lora_linear_layer." in k or ".lora_B." in k for k in keys):
        return "diffusers"
    return "unknown"


def _family_from_metadata(meta: dict[str, str]) -> str | None:
    fam = meta.get("lora_studio.base_family")
    if fam in BASE_MODEL_VERSION:
        return fam
    version = meta.get("ss_base_model_version", "")
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2") or meta.get("ss_v2") == "True":
        return "sd2"
    if version.startswith("sd_v1"):
        return "sd1"
    arch = meta.get("modelspec.architecture", "")
    if "stable-diffusion-xl" in arch:
        return "sdxl"
    if "stable-diffusion-v2" in arch:
        return "sd2"
    if "stable-diffusion-v1" in arch:
        return "sd1"
    return None


def cross_attention_width(shapes: dict[str, tuple[int, ...]]) -> int | None:
    """In-features of the LoRA on a cross-attention key projection = the text width the UNet expects."""
    for key, shape in shapes.items():
        if ("attn2.to_k" in key or "attn2_to_k" in key) and ("lora_down" in key or ".down." in key
                                                             or "lora_A" in key):
            return int(shape[1])
    return None


def lora_family(shapes: dict[str, tuple[int, ...]], meta: dict[str, str]) -> str | None:
    fam = _family_from_metadata(meta)
    if fam:
        return fam
    keys = shapes.keys()
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in keys) or any(
            k.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block"))
            for k in keys):
        return "sdxl"
    return CROSS_WIDTH_FAMILY.get(cross_attention_width(shapes) or 0)


_OLD_NAMES = [  # diffusers' attention-processor era names -> module names
    (re.compile(r"\.processor\.(to_[qkv])_lora\."), r".\1.lora."),
    (re.compile(r"\.processor\.to_out_lora\."), ".to_out.0.lora."),
    (re.compile(r"\.self_attn\.to_([qkv])_lora\."), r".self_attn.\1_proj.lora."),
    (re.compile(r"\.self_attn\.to_out_lora\."), ".self_attn.out_proj.lora."),
]


def _split_pair_key(key: str) -> tuple[str, str] | None:
    for pattern, repl in _OLD_NAMES:
        key = pattern.sub(repl, key)
    for down, up in _PAIR_SUFFIXES:
        if key.endswith(down):
            return key[: -len(down)], "down"
        if key.endswith(up):
            return key[: -len(up)], "up"
    return None


def canonical_name(name: str) -> str:
    """'unet.<module>' / 'text_encoder[_2].text_model.<module>' whatever the file's naming era."""
    name = name.removeprefix("base_model.model.")
    comp, _, module = name.partition(".")
    if comp not in COMPONENTS:
        return "unet." + name  # old diffusers files: UNet keys had no prefix
    if comp != "unet":
        module = _with_text_model(module)
    return f"{comp}.{module}"


def _float(value) -> float | None:
    try:
        return float(value) if value not in (None, "", "None") else None
    except (TypeError, ValueError):
        return None


def _with_text_model(module: str) -> str:
    # transformers >= 5.6 flattened CLIPTextModel; kohya names keep the `text_model.` level.
    return module if module.startswith(("text_model.", "text_projection")) else "text_model." + module



def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


