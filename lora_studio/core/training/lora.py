"""LoRA (and LoHa / LoKr) layers through peft: build them, read their weights, save them in diffusers format."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lora_studio.core.io import write_with

ADAPTER_FILE = "pytorch_lora_weights.safetensors"
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


LOCON_TARGETS = ["conv1", "conv2", "conv_shortcut"]  # the ResNet convolutions LyCORIS' LoCon adds


def lora_config(config, target_modules, unet: bool = True):
    """peft's config for the run's network; every kind starts as the identity (one factor starts at zero)."""
    network = getattr(config, "network", "lora")
    targets = list(target_modules)
    if network in ("loha", "lokr"):
        from peft import LoHaConfig, LoKrConfig

        kind = LoHaConfig if network == "loha" else LoKrConfig
        return kind(r=config.rank, alpha=config.alpha, module_dropout=config.lora_dropout, init_weights=True,
                    target_modules=targets)
    from peft import LoraConfig

    if network == "locon" and unet:
        targets += [t for t in LOCON_TARGETS if t not in targets]
    # Gaussian init: B starts at zero, so the adapter starts as the identity, like diffusers' scripts.
    return LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.lora_dropout,
                      init_lora_weights="gaussian", target_modules=targets)


def build_lora(models, config) -> list[torch.nn.Parameter]:
    """Add LoRA layers to the UNet (and text encoders when asked); return the trainable parameters."""
    from lora_studio.errors import LoraStudioError

    if getattr(config, "network", "lora") in ("loha", "lokr") and config.int8_base:
        raise LoraStudioError(f"network = \"{config.network}\" cannot train on an 8-bit base (int8_base).",
                              "set int8_base = false, or network = \"lora\".")
    try:
        models.unet.add_adapter(lora_config(config, config.target_modules))
    except ValueError as exc:
        raise LoraStudioError(f"target_modules {config.target_modules} matched no UNet layer ({exc}).",
                              "use module names of the UNet's attention, e.g. [\"to_q\", \"to_k\", \"to_v\", "
                              "\"to_out.0\"].") from None
    if config.train_text_encoder:
        from peft import inject_adapter_in_model

        for encoder in models.text_encoders:
            # peft directly: transformers' add_adapter wants a newer peft than diffusers does.
            te_config = lora_config(config, TEXT_ENCODER_TARGETS, unet=False)
            inject_adapter_in_model(te_config, encoder, adapter_name="default")
            encoder.peft_config = {"default": te_config}
    params = []
    for module in trainable_modules(models, config):
        for p in module.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # trainable weights stay fp32 whatever the mixed precision
                params.append(p)
    return params


def trainable_modules(models, config) -> list:
    return [models.unet, *(models.text_encoders if config.train_text_encoder else [])]


def _unwrap(module):
    return getattr(module, "module", module)


def lora_state_dicts(models, config) -> dict[str, dict[str, torch.Tensor]]:
    """LoRA weights per component ('unet', 'text_encoder', 'text_encoder_2') with peft's key names."""
    from peft.utils import get_peft_model_state_dict

    # peft's own key names (``lora_A`` / ``lora_B``), unconverted: diffusers reads them directly. Converting
    # to the older ``lora.down`` style mixes two key styles once targets reach beyond attention (resnet
    # convolutions, feed-forwards), and diffusers then drops every attention layer without a word.
    out = {"unet": get_peft_model_state_dict(_unwrap(models.unet))}
    if config.train_text_encoder:
        names = ["text_encoder", "text_encoder_2"][: len(models.text_encoders)]
        for name, enc in zip(names, models.text_encoders):
            out[name] = get_peft_model_state_dict(_unwrap(enc))
    return {k: {n: t.detach().float().cpu().contiguous() for n, t in v.items()} for k, v in out.items()}


def adapter_metadata(models, config, extra: dict | None = None) -> dict[str, str]:
    """The file's safetensors metadata: diffusers' peft configs plus what LoRA Studio records."""
    packed = {}
    for name, module in [("unet", models.unet), ("text_encoder", None), ("text_encoder_2", None)]:
        if module is None:
            idx = 0 if name == "text_encoder" else 1
            if not config.train_text_encoder or idx >= len(models.text_encoders):
                continue
            module = models.text_encoders[idx]
        cfg = _unwrap(module).peft_config["default"].to_dict()
        for key, value in cfg.items():
            packed[f"{name}.{key}"] = sorted(value) if isinstance(value, set) else value
    meta = {
        "format": "pt",
        # diffusers >= 0.34 builds the LoraConfig from this key, so alpha != rank scales correctly on load.
        "lora_adapter_metadata": json.dumps(packed, indent=2, sort_keys=True, default=str),
        "lora_studio.base_family": models.family,
        "lora_studio.rank": str(config.rank),
        "lora_studio.alpha": repr(float(config.alpha)),
        "lora_studio.target_modules": json.dumps(list(config.target_modules)),
        "lora_studio.text_encoder": json.dumps(bool(config.train_text_encoder)),
        "lora_studio.base_model": str(config.pretrained_model_name_or_path),
        "lora_studio.network": getattr(config, "network", "lora"),
    }
    for key, value in (extra or {}).items():
        meta[f"lora_studio.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return meta


def save_adapter(folder: str | Path, models, config, extra: dict | None = None) -> Path:
    """Write ``folder/pytorch_lora_weights.safetensors`` atomically, in the pipeline class's own layout."""
    from safetensors.torch import save_file

    folder = Path(folder)
    layers = lora_state_dicts(models, config)
    metadata = adapter_metadata(models, config, extra)
    path = folder / ADAPTER_FILE

    def save_function(weights, filename):
        write_with(path, lambda tmp: save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp),
                                               metadata=metadata))

    kwargs = dict(unet_lora_layers=layers["unet"], save_function=save_function, weight_name=ADAPTER_FILE)
    if "text_encoder" in layers:
        kwargs["text_encoder_lora_layers"] = layers["text_encoder"]
    if "text_encoder_2" in layers:
        kwargs["text_encoder_2_lora_layers"] = layers["text_encoder_2"]
    folder.mkdir(parents=True, exist_ok=True)
    if getattr(config, "network", "lora") in ("loha", "lokr"):
        # peft's own names with a component prefix; diffusers' save_lora_weights knows only LoRA pairs.
        save_function({f"{comp}.{k}": v for comp, sd in layers.items() for k, v in sd.items()}, path)
        return path
    models.pipeline_class.save_lora_weights(str(folder), **kwargs)
    return path


def load_adapter_weights(models, config, path: str | Path) -> None:
    """Put saved LoRA weights back into the live adapters (resume); files of either key style load."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(path))
    groups: dict[str, dict] = {}
    for key, value in state.items():
        prefix, rest = key.split(".", 1)
        groups.setdefault(prefix, {})[rest] = value
    set_peft_model_state_dict(_unwrap(models.unet), _as_peft(groups["unet"], unet=True))
    if config.train_text_encoder:
        for name, enc in zip(["text_encoder", "text_encoder_2"], models.text_encoders):
            set_peft_model_state_dict(_unwrap(enc), _as_peft(groups[name], unet=False))
    for module in trainable_modules(models, config):
        for p in module.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()


def _as_peft(state: dict, unet: bool) -> dict:
    """peft key names; checkpoints written before LoRA Studio saved peft names use diffusers' older style."""
    if any(".lora_A." in key or ".lora_B." in key or ".hada_" in key or ".lokr_" in key for key in state):
        return state
    from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    return convert_unet_state_dict_to_peft(state) if unet else convert_state_dict_to_peft(state)
