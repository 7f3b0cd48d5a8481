"""Architectures of the demo pipelines (random init) and the project-built CLIP tokenizer.

`demo` is Stable Diffusion 1.x in miniature, `demo-xl` is SDXL in miniature: the same classes, the same
module names (to_q/to_k/to_v/to_out.0, text_model.encoder.layers.N...), the same conditioning paths
(SDXL: two text encoders, pooled embeddings, time ids), only narrower and shallower, on 64x64 images
with 16x16x4 latents.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from functools import lru_cache
from pathlib import Path

MAX_TOKENS = 77  # CLIP's context length, so prompt handling code sees what real checkpoints give it
IMAGE_SIZE = 64
LATENT_SIZE = 16

# Words the tokenizer learns whole tokens for. Anything else is spelled with byte-level pieces, so no
# text ever becomes unknown. "sks", "zebra" and "style" are tokens the base models never see in training.
_WORDS = (
    "a an the of on in with and photo picture drawing image render shape shapes object thing "
    "red green blue yellow purple cyan orange pink white black gray grey beige dark light "
    "circle square triangle star cross heart ring dot disk box "
    "small big large tiny medium centered left right top bottom background backdrop plain "
    "sks zebra striped stripes style pattern dotted toy dog cat person man woman portrait "
    "high quality detailed simple flat colour color"
).split()


def bytes_to_unicode() -> dict[int, str]:
    # The byte -> printable-character table of GPT-2/CLIP byte-level BPE (a public, fixed mapping).
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def _learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Plain BPE on the word list until every word is one token (ties broken by the pair itself)."""
    table = bytes_to_unicode()
    seqs = Counter()
    for w in words:
        symbols = [table[b] for b in w.encode("utf-8")]
        symbols[-1] += "</w>"
        seqs[tuple(symbols)] += 1
    merges: list[tuple[str, str]] = []
    while True:
        pairs = Counter()
        for seq, count in seqs.items():
            for pair in zip(seq, seq[1:]):
                pairs[pair] += count
        if not pairs:
            return merges
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = Counter()
        for seq, count in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            merged[tuple(out)] += count
        seqs = merged


@lru_cache(maxsize=1)
def tokenizer_files() -> tuple[str, str]:
    """(vocab.json text, merges.txt text): 512 byte tokens, the learned merges, then the two specials."""
    base = list(bytes_to_unicode().values())
    vocab_list = base + [c + "</w>" for c in base]
    merges = _learn_merges(_WORDS)
    vocab_list += ["".join(pair) for pair in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    return json.dumps(vocab, ensure_ascii=False), merges_txt


def make_tokenizer(pad_token: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer

    vocab_txt, merges_txt = tokenizer_files()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "vocab.json").write_text(vocab_txt, encoding="utf-8")
        Path(tmp, "merges.txt").write_text(merges_txt, encoding="utf-8")
        tok = CLIPTokenizer.from_pretrained(tmp, model_max_length=MAX_TOKENS, pad_token=pad_token)
    return tok


def _text_config(tok, hidden: int, layers: int, heads: int, projection_dim: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=MAX_TOKENS,
        hidden_act="quick_gelu",
        projection_dim=projection_dim,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def make_vae():
    from diffusers import AutoencoderKL

    # Three blocks = two 2x downsamples: 64x64x3 -> 16x16x4. The scaling factor is set after training
    # from the latents' standard deviation (as SD did), so the UNet sees unit-variance latents.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
        scaling_factor=1.0,
    )


def make_scheduler():
    from diffusers import EulerDiscreteScheduler

    # SD 1.x / SDXL's training noise schedule; Euler samples well in 20 steps.
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
    )


SD1_TEXT = dict(hidden=64, layers=3, heads=4, projection_dim=64)
SDXL_TEXT_1 = dict(hidden=32, layers=2, heads=2, projection_dim=32)
SDXL_TEXT_2 = dict(hidden=64, layers=3, heads=4, projection_dim=32)
ADDITION_TIME_EMBED_DIM = 8


def make_sd1_unet(cross_attention_dim: int = SD1_TEXT["hidden"]):
    from diffusers import UNet2DConditionModel

    # SD 1.x's layout: cross-attention at the two finer levels and in the mid block, none at the coarsest.
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        norm_num_groups=16,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
    )


def make_sdxl_unet():
    from diffusers import UNet2DConditionModel

    # SDXL's layout: no attention at the finest level, transformer depth growing with depth,
    # pooled text + (original size, crop, target size) time ids added to the timestep embedding.
    cross = SDXL_TEXT_1["hidden"] + SDXL_TEXT_2["hidden"]
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        transformer_layers_per_block=(1, 1, 2),
        norm_num_groups=16,
        cross_attention_dim=cross,
        attention_head_dim=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=SDXL_TEXT_2["projection_dim"] + 6 * ADDITION_TIME_EMBED_DIM,
    )


def build_sd1_components(seed: int = 0) -> dict:
    import torch
    from transformers import CLIPTextModel

    tok = make_tokenizer()
    torch.manual_seed(seed)
    return {
        "unet": make_sd1_unet(),
        "vae": make_vae(),
        "text_encoder": CLIPTextModel(_text_config(tok, **SD1_TEXT)),
        "tokenizer": tok,
        "scheduler": make_scheduler(),
    }


def build_sdxl_components(seed: int = 0) -> dict:
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok = make_tokenizer()
    tok_2 = make_tokenizer(pad_token="!")  # SDXL's second tokenizer pads with "!"
    torch.manual_seed(seed)
    return {
        "unet": make_sdxl_unet(),
        "vae": make_vae(),
        "text_encoder": CLIPTextModel(_text_config(tok, **SDXL_TEXT_1)),
        "text_encoder_2": CLIPTextModelWithProjection(_text_config(tok_2, **SDXL_TEXT_2)),
        "tokenizer": tok,
        "tokenizer_2": tok_2,
        "scheduler": make_scheduler(),
    }


def pipeline_from_components(family: str, components: dict):
    if family in ("sd1", "sd15", "demo"):
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    if family in ("sdxl", "demo-xl"):
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(**components)
    raise ValueError(f"unknown family {family!r}: use 'sd1' or 'sdxl'")


def build_pipeline(family: str = "sd1", seed: int = 0):
    """A randomly initialised demo pipeline of the given family ("sd1"/"sd15" or "sdxl")."""
    if family not in ("sd1", "sd15", "demo", "sdxl", "demo-xl"):
        raise ValueError(f"unknown family {family!r}: use 'sd1' or 'sdxl'")
    sdxl = family in ("sdxl", "demo-xl")
    return pipeline_from_components(family, (build_sdxl_components if sdxl else build_sd1_components)(seed))
