"""Full-size SD 1.5 and SDXL UNets (the real models' configs, random weights), tiny ones for CPU smoke runs.

Random weights have the same FLOPs and memory as trained ones, so the benchmark needs no download.
"""

from __future__ import annotations

import time

import torch

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, act_fn="silu",
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1, norm_eps=1e-5,
)

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, flip_sin_to_cos=True, freq_shift=0, norm_num_groups=32,
    act_fn="silu",
)

# Full-size VAEs (decoder matters for preview timing): SD 1.5 and SDXL share the layout.
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32, act_fn="silu", sample_size=512,
)

# name -> (unet config, image size, text tokens, text width, pooled width or None)
MODELS = {
    "sd15": (SD15_UNET, 512, 77, 768, None),
    "sdxl": (SDXL_UNET, 1024, 77, 2048, 1280),
}


def tiny_models():
    """Demo-sized architectures (lora_studio.core.demo.build) standing in on the CPU."""
    from lora_studio.core.demo import build

    sd1 = build.make_sd1_unet().config
    sdxl = build.make_sdxl_unet().config
    return {
        "sd15": (dict(sd1), 64, 77, sd1["cross_attention_dim"], None),
        "sdxl": (dict(sdxl), 64, 77, sdxl["cross_attention_dim"],
                 sdxl["projection_class_embeddings_input_dim"] - 6 * sdxl["addition_time_embed_dim"]),
    }


def build_unet(config: dict, device, dtype=torch.bfloat16):
    """Construct directly on the device in the target dtype: no fp32 copy on the host, seconds for SDXL."""
    from diffusers import UNet2DConditionModel

    t0 = time.perf_counter()
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            unet = UNet2DConditionModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    finally:
        torch.set_default_dtype(old)
    unet.requires_grad_(False)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return unet, time.perf_counter() - t0


def add_lora(unet, rank: int = 32, targets=("to_q", "to_k", "to_v", "to_out.0")) -> list:
    """peft LoRA as the reference recipe has it: fp32 trainable A/B over the frozen low-precision base."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=list(targets)))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def make_batch(spec, batch: int, device, dtype=torch.bfloat16, generator=None):
    """Cached latents and text embeddings as a training run keeps them on the GPU."""
    config, image, tokens, width, pooled = spec
    latent = image // 8
    g = generator
    out = {
        "latents": torch.randn(batch, 4, latent, latent, generator=g).to(device),
        "encoder_hidden_states": torch.randn(batch, tokens, width, generator=g).to(device, dtype),
    }
    if pooled is not None:
        out["text_embeds"] = torch.randn(batch, pooled, generator=g).to(device, dtype)
        out["time_ids"] = torch.tensor([[image, image, 0, 0, image, image]] * batch, dtype=torch.float32,
                                       device=device).to(dtype)
    return out


def count_params(config: dict) -> int:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    return sum(p.numel() for p in unet.parameters())
