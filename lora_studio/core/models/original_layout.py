"""diffusers -> original (LDM / SGM) layout: single-file checkpoints and kohya's SDXL block names.

AUTOMATIC1111, ComfyUI and kohya's sd-scripts name the UNet after the original Stable Diffusion code
(``input_blocks.4.1`` rather than ``down_blocks.1.attentions.0``). The mapping follows from the UNet's
config, so it holds for SD 1.x, SDXL and the miniature demo models alike. The reverse direction is
diffusers' own single-file loader; tests check that the two round-trip exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

_UNET_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
_VAE_RESNET = [("conv_shortcut", "nin_shortcut")]
_VAE_ATTN = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _layers_per_block(config) -> int:
    lpb = config["layers_per_block"]
    if not isinstance(lpb, int):
        if len(set(lpb)) != 1:
            raise ValueError("per-block layers_per_block has no original-layout equivalent")
        lpb = lpb[0]
    return lpb


def unet_block_map(config) -> list[tuple[str, str, str]]:
    """[(diffusers prefix, original prefix, kind)] for every block of a UNet2DConditionModel config."""
    L = _layers_per_block(config)
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    out = [("time_embedding.linear_1", "time_embed.0", ""), ("time_embedding.linear_2", "time_embed.2", ""),
           ("add_embedding.linear_1", "label_emb.0.0", ""), ("add_embedding.linear_2", "label_emb.0.2", ""),
           ("conv_in", "input_blocks.0.0", ""), ("conv_norm_out", "out.0", ""), ("conv_out", "out.2", ""),
           ("mid_block.resnets.0", "middle_block.0", "resnet"), ("mid_block.attentions.0", "middle_block.1", ""),
           ("mid_block.resnets.1", "middle_block.2", "resnet")]
    for i, _ in enumerate(down):
        for j in range(L):
            n = (L + 1) * i + j + 1
            out.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{n}.0", "resnet"))
            out.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{n}.1", ""))
        if i < len(down) - 1:
            out.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(L + 1) * (i + 1)}.0.op", ""))
    for i, kind in enumerate(up):
        for j in range(L + 1):
            n = (L + 1) * i + j
            out.append((f"up_blocks.{i}.resnets.{j}", f"output_blocks.{n}.0", "resnet"))
            out.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{n}.1", ""))
        if i < len(up) - 1:
            pos = 2 if "CrossAttn" in kind else 1
            out.append((f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{(L + 1) * i + L}.{pos}.conv", ""))
    return out


def _rename(name: str, table) -> str | None:
    for src, dst, kind in table:
        if name == src or name.startswith(src + "."):
            rest = name[len(src):]
            if kind == "resnet":
                for a, b in _UNET_RESNET:
                    if rest == "." + a or rest.startswith("." + a + "."):
                        rest = "." + b + rest[len(a) + 1:]
                        break
            return dst + rest
    return None


def unet_name_to_original(name: str, config, table=None) -> str:
    """A UNet parameter or module name in diffusers layout -> its original-layout name."""
    new = _rename(name, table or unet_block_map(config))
    if new is None:
        raise KeyError(f"UNet module {name!r} has no original-layout name")
    return new


def unet_to_original(state_dict: dict, config) -> dict:
    table = unet_block_map(config)
    return {"model.diffusion_model." + unet_name_to_original(k, config, table): v for k, v in state_dict.items()}


def vae_to_original(state_dict: dict, config) -> dict:
    n_up = len(config["up_block_types"])
    out = {}
    for key, value in state_dict.items():
        new = key
        for part in ("encoder", "decoder"):
            new = new.replace(f"{part}.conv_norm_out.", f"{part}.norm_out.")
            new = new.replace(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.")
            new = new.replace(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.")
            if f"{part}.mid_block.attentions.0." in new:
                new = new.replace(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")
                for a, b in _VAE_ATTN:
                    new = new.replace(f".attn_1.{a}.", f".attn_1.{b}.")
                if value.ndim == 2:  # the original uses 1x1 convolutions for q, k, v, proj_out
                    value = value[:, :, None, None]
        parts = new.split(".")
        if parts[0] == "encoder" and parts[1] == "down_blocks":
            i = parts[2]
            if parts[3] == "resnets":
                new = ".".join(["encoder", "down", i, "block", *parts[4:]])
            else:  # downsamplers.0.conv
                new = ".".join(["encoder", "down", i, "downsample", *parts[5:]])
        elif parts[0] == "decoder" and parts[1] == "up_blocks":
            i = str(n_up - 1 - int(parts[2]))
            if parts[3] == "resnets":
                new = ".".join(["decoder", "up", i, "block", *parts[4:]])
            else:
                new = ".".join(["decoder", "up", i, "upsample", *parts[5:]])
        for a, b in _VAE_RESNET:
            new = new.replace(f".{a}.", f".{b}.")
        out["first_stage_model." + new] = value
    return out


def _with_text_model(key: str) -> str:
    # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); the original layout keeps it.
    return key if key.startswith(("text_model.", "text_projection")) else "text_model." + key


def clip_to_original(state_dict: dict, prefix: str) -> dict:
    return {prefix + _with_text_model(k): v for k, v in state_dict.items() if "position_ids" not in k}


def open_clip_to_original(state_dict: dict, prefix: str) -> dict:
    """A (flattened or not) CLIPTextModel[WithProjection] -> OpenCLIP's layout (SD 2.x, SDXL's second encoder)."""
    sd = {_with_text_model(k): v for k, v in state_dict.items() if "position_ids" not in k}
    out = {}
    fixed = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
             "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
             "text_model.final_layer_norm.weight": "ln_final.weight",
             "text_model.final_layer_norm.bias": "ln_final.bias"}
    layer_parts = [("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                   ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]
    qkv: dict[str, dict[str, object]] = {}
    for key, value in sd.items():
        if key in fixed:
            out[prefix + fixed[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif key.startswith("text_model.encoder.layers."):
            rest = key[len("text_model.encoder.layers."):]
            idx, sub = rest.split(".", 1)
            base = f"{prefix}transformer.resblocks.{idx}."
            if sub.startswith("self_attn.") and sub.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                proj, kind = sub.split(".")[1:3]
                qkv.setdefault(f"{base}attn.in_proj_{kind}", {})[proj] = value
                continue
            for a, b in layer_parts:
                if sub.startswith(a + "."):
                    sub = b + sub[len(a):]
                    break
            out[base + sub] = value
        else:
            raise KeyError(f"text encoder key {key!r} has no OpenCLIP name")
    import torch

    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    return out


def pipeline_to_original(pipe) -> dict:
    """The whole pipeline as one original-layout state dict (what A1111/ComfyUI load)."""
    sd = {}
    sd.update(unet_to_original(pipe.unet.state_dict(), pipe.unet.config))
    sd.update(vae_to_original(pipe.vae.state_dict(), pipe.vae.config))
    te = pipe.text_encoder.state_dict()
    if getattr(pipe, "text_encoder_2", None) is not None:
        sd.update(clip_to_original(te, "conditioner.embedders.0.transformer."))
        sd.update(open_clip_to_original(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    elif pipe.text_encoder.config.hidden_act == "gelu" and pipe.unet.config.cross_attention_dim == 1024:
        sd.update(open_clip_to_original(te, "cond_stage_model.model."))
    else:
        sd.update(clip_to_original(te, "cond_stage_model.transformer."))
    return sd


def save_single_file(pipe, path, dtype=None, family: str | None = None, extra_metadata: dict | None = None,
                     embed_config: bool = True) -> Path:
    """Write ``pipe`` as one original-layout ``.safetensors`` (atomically), its diffusers configs in the metadata.

    Other apps read the tensors; LoRA Studio also reads the embedded configs, so models of any size
    (the demo models too) load back with no network and no bundled config.
    """
    from safetensors.torch import save_file

    from lora_studio.core.io import write_with
    from lora_studio.core.models.loader import EMBEDDED_CONFIG_KEY, pipeline_configs

    path = Path(path)
    sd = pipeline_to_original(pipe)
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
          for k, v in sd.items()}
    family = family or ("sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd1")
    configs = {k: v for k, v in pipeline_configs(pipe).items()}
    metadata = {"format": "pt", "modelspec.architecture": {"sdxl": "stable-diffusion-xl-v1-base",
                                                           "sd2": "stable-diffusion-v2"}.get(family,
                                                                                             "stable-diffusion-v1"),
                }
    if embed_config:
        metadata[EMBEDDED_CONFIG_KEY] = json.dumps({"family": family, "configs": configs})
    metadata.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    write_with(path, lambda tmp: save_file(sd, str(tmp), metadata=metadata))
    return path
