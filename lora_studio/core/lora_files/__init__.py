"""LoRA files: read (diffusers / peft / kohya, through diffusers' own converters), inspect, guard, export.

Every LoRA is read into one plain form: ``{"unet.<module>": LoraModule(down, up, alpha)}`` (also
``text_encoder.`` / ``text_encoder_2.``), module names as in the loaded diffusers model, ``down`` (r, in)
and ``up`` (out, r), scale = alpha / r. Merging, fusing and the kohya export work on that form.

The kohya export is what AUTOMATIC1111, ComfyUI and kohya's sd-scripts read: ``lora_unet_*`` named after
diffusers blocks for SD 1.x/2.x and after the original ``input_blocks/middle_block/output_blocks`` for SDXL,
``lora_te_*`` (SD 1.x/2.x) or ``lora_te1_*``/``lora_te2_*`` (SDXL), ``lora_down``/``lora_up``, an ``alpha``
tensor holding the real alpha, and the ``ss_*`` / ``modelspec.*`` metadata those apps look at. LoHa / LoKr
layers (``lycoris``) keep the same layer names with LyCORIS' part names (``hada_w1_a``, ``lokr_w1`` ...).
A training run's main file ``<run>/<run>.safetensors`` is this export with the run's metadata (``metadata``).
"""

from lora_studio.core.lora_files.forms import (BASE_MODEL_VERSION, COMPONENTS, KOHYA_TE, MODELSPEC_ARCH, LoraFile,
                                               LoraModule, canonical_name, cross_attention_width, family_name,
                                               file_format, lora_family)
from lora_studio.core.lora_files.guard import check_fits
from lora_studio.core.lora_files.inspect import inspect_file
from lora_studio.core.lora_files.lycoris import NETWORK_NAMES, LycorisModule
from lora_studio.core.lora_files.metadata import lora_trigger_phrase, training_metadata
from lora_studio.core.lora_files.kohya import (convert, export_kohya, kohya_module_map, kohya_name, peft_state_dict,
                                               pipeline_family, write_diffusers, write_kohya)
from lora_studio.core.lora_files.read import (default_unet_config, lora_from_state_dict, read_lora,
                                              unet_config_for)

__all__ = ["BASE_MODEL_VERSION", "COMPONENTS", "KOHYA_TE", "MODELSPEC_ARCH", "NETWORK_NAMES", "LoraFile", "LoraModule",
           "LycorisModule", "canonical_name", "check_fits", "convert", "cross_attention_width", "default_unet_config",
           "export_kohya", "family_name", "file_format", "inspect_file", "kohya_module_map", "kohya_name",
           "lora_family", "lora_from_state_dict", "lora_trigger_phrase", "peft_state_dict", "pipeline_family",
           "read_lora", "training_metadata", "unet_config_for", "write_diffusers", "write_kohya"]
