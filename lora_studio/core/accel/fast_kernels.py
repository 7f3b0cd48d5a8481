"""Kernel-level speed-ups of the fast training step (the CUDA graph in `graphs` removes launches; these
remove memory passes inside the step). Each one is optional, measured in bench/NOTES.md, and leaves the
arithmetic the same up to bf16 rounding:

- ``install_fast_lora``: peft's LoRA Linear forward without its fp32 input copy, scale and add passes;
- ``compile_blocks``: regional torch.compile of the UNet's repeated blocks (``COMPILE_SETS``);
- ``sdpa_context``: a fixed scaled-dot-product-attention backend;
- the Triton kernel modules' shared self-check and per-instance forward patching.

`lora_studio.core.accel.prepare` is what turns these on.
"""

from __future__ import annotations

import contextlib
import functools
import types
from typing import Callable

import torch

from lora_studio.core.accel.int8_base import Int8Linear, base_dtype

SDPA_BACKENDS = ("flash", "cudnn", "efficient", "math")


def sdpa_context(backend: str | None):
    """A context that makes scaled_dot_product_attention use `backend` (None or 'auto': torch's choice).

    The choice is read when the kernel is launched, so a captured graph keeps the backend of its capture.
    """
    if not backend or backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    if backend not in names:
        raise ValueError(f"unknown attention backend {backend!r} (one of {', '.join(SDPA_BACKENDS)})")
    # The chosen backend first, the others as fallbacks for shapes it does not support.
    order = [names[backend]] + [v for k, v in names.items() if k != backend]
    return sdpa_kernel(order, set_priority=True)


def triton_self_check(check: Callable[[str, torch.dtype, float], bool], fp32_tol: float = 1e-4) -> Callable[[str], bool]:
    """A Triton kernel module's self-check, run once per device: ``check(device, dtype, tol)`` in the dtype a
    run's activations have (bf16 on a GPU, so it compiles the kernel variants the run then uses; float32 on the
    CPU, in Triton's interpreter), with gradients on. An exception counts as a failure: a Triton or driver that
    cannot build the kernels leaves the step on eager code instead of failing a run. (Checks draw from their
    own torch.Generator: a run's random stream must not depend on whether one ran.)"""
    @functools.cache
    def self_check(device: str) -> bool:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        try:
            with torch.enable_grad():
                return bool(check(device, dtype, 3e-2 if dtype == torch.bfloat16 else fp32_tol))
        except Exception:  # noqa: BLE001
            return False

    return self_check


def triton_available(kernels: Callable, self_check: Callable[[str], bool], device) -> bool:
    """Triton is there, ``kernels()`` builds them, and the module's `triton_self_check` passes on `device`."""
    try:
        kernels()
    except Exception:  # noqa: BLE001 - no Triton, or one this code does not fit: the eager path then
        return False
    return self_check(str(torch.device(device)))


def patch_forward(sub, fn: Callable) -> None:
    """Give one module instance `fn` as its forward; its class and every other instance keep theirs."""
    sub.forward = types.MethodType(fn, sub)


def install_forward(module, fn: Callable, wanted: Callable[[torch.nn.Module], bool],
                    available: Callable[[torch.device], bool]) -> int:
    """`patch_forward` `fn` onto every submodule of `module` that `wanted` picks and that has no per-instance
    forward yet, if ``available(device)`` holds on the module's device (a Triton module's kernel check);
    returns how many."""
    p = next(module.parameters(), None)
    if p is None or not available(p.device):
        return 0
    n = 0
    for sub in module.modules():
        if "forward" not in sub.__dict__ and wanted(sub):
            patch_forward(sub, fn)
            n += 1
    return n


def patched(sub, fn: Callable) -> bool:
    return getattr(sub.__dict__.get("forward"), "__func__", None) is fn


def count_patched(module, fn: Callable) -> int:
    """How many of `module`'s submodules run `fn` as their forward (`patch_forward`)."""
    return sum(patched(sub, fn) for sub in module.modules())


def unpatch(module, fn: Callable) -> int:
    """Give every submodule that runs `fn` its class's forward back; returns how many."""
    n = 0
    for sub in module.modules():
        if patched(sub, fn):
            del sub.forward
            n += 1
    return n


def _fast_lora_linear(self, x, *args, **kwargs):
    """peft's LoRA Linear forward, minus its memory passes: same result up to bf16 rounding.

    peft casts the input to the fp32 adapter dtype (a full copy that autocast casts straight back), scales
    the adapter output and adds it to the base output as separate kernels. Here the scale is folded into B
    (a rank x out tensor) and the add into B's matrix product (addmm accumulates onto the base output).
    The adapter's fp32 weights are cast to the compute dtype (autocast's, else the input's: the pure-bf16
    step), so their gradients still land in fp32. Only with one plain adapter active and a low-precision
    compute dtype; anything else runs peft's own forward.
    """
    dtype = compute_dtype(x, base_dtype(self.base_layer))  # the base may be an int8-stored Linear
    if args or kwargs or not fast_lora_ready(self) or dtype is None:
        return type(self).forward(self, x, *args, **kwargs)  # e.g. fp32 compute: peft's arithmetic as it is
    name = self._fast_lora_name
    y = self.base_layer(x)
    h = torch.nn.functional.linear(x, self.lora_A[name].weight.to(dtype))
    b = scaled_b(self).to(dtype)
    out = torch.addmm(y.reshape(-1, y.shape[-1]), h.reshape(-1, h.shape[-1]), b.t())
    return out.view(y.shape)


def fast_lora_ready(layer) -> bool:
    """`layer` is on the fast forward and its one adapter is live (not off, not merged, not another active)."""
    name = layer.__dict__.get("_fast_lora_name")
    return (name is not None and not layer.disable_adapters and not layer.merged
            and list(layer.active_adapters) == [name])


def compute_dtype(x: torch.Tensor, weight_dtype: torch.dtype) -> torch.dtype | None:
    """The low-precision dtype the fast forward computes in (autocast's, else the input's when the frozen
    weight's dtype matches it), or None where the computation is fp32: then peft's / diffusers' own forward runs."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype if x.dtype in (torch.bfloat16, torch.float16) and weight_dtype == x.dtype else None


def scaled_b(layer) -> torch.Tensor:
    """The active adapter's B with its scale (alpha / rank) folded in: a rank x out tensor, not an activation."""
    name = layer._fast_lora_name
    b, scaling = layer.lora_B[name].weight, layer.scaling[name]
    return b if scaling == 1 else b * scaling


def install_fast_lora(module) -> int:
    """Route every plain peft LoRA Linear in `module` through `_fast_lora_linear`; returns how many.

    Skipped (peft's forward kept): dropout > 0, DoRA or other variants, several adapters, non-Linear bases.
    """
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # pragma: no cover - peft is a dependency
        return 0
    n = 0
    for sub in module.modules():
        if not isinstance(sub, LoraLinear) or not isinstance(sub.base_layer, (torch.nn.Linear, Int8Linear)):
            continue
        active = list(sub.active_adapters)
        if len(active) != 1 or active[0] not in sub.lora_A or active[0] in getattr(sub, "lora_variant", {}):
            continue
        if getattr(sub, "use_dora", {}).get(active[0], False):
            continue
        if not isinstance(sub.lora_dropout[active[0]], torch.nn.Identity):
            continue
        sub._fast_lora_name = active[0]
        patch_forward(sub, _fast_lora_linear)
        n += 1
    return n


def count_lora_layers(module) -> int:
    try:
        from peft.tuners.lora.layer import LoraLayer
    except ImportError:  # pragma: no cover
        return 0
    return sum(1 for sub in module.modules() if isinstance(sub, LoraLayer))


def installed_fast_lora(module) -> int:
    """How many LoRA Linears in `module` run `_fast_lora_linear`."""
    return sum("_fast_lora_name" in sub.__dict__ for sub in module.modules())


def uninstall_fast_lora(module) -> int:
    n = 0
    for sub in module.modules():
        if "_fast_lora_name" in sub.__dict__:
            sub.__dict__.pop("forward", None)
            del sub.__dict__["_fast_lora_name"]
            n += 1
    return n


# What `compile_blocks` compiles: "blocks" = the repeated transformer block
# (GEGLU, residual adds, norms fused); "blocks_res" + every ResnetBlock2D (GroupNorm + SiLU + the time-embedding
# add fused around cuDNN's convolutions); "regions" = every Transformer2DModel whole (its GroupNorm and
# projections too, but all its blocks in one graph: longer compiles) and ResnetBlock2D; "unet" = the whole UNet
# as one graph (inductor also picks channels-last for the convolutions and fuses across block boundaries).
COMPILE_SETS = {
    "blocks": ("BasicTransformerBlock",),
    "blocks_res": ("BasicTransformerBlock", "ResnetBlock2D"),
    "regions": ("Transformer2DModel", "ResnetBlock2D"),
    "unet": ("UNet2DConditionModel",),
}
# Distinct block shapes in one UNet (SD 1.5's resnets: ~10 channel/size pairs) each compile once; torch's
# default limit of 8 recompilations per function would leave the rest uncompiled, silently.
RECOMPILE_LIMIT = 64


# dynamic=False: one graph per bucket shape, like the captured step. Two inductor passes are off: they cost
# SDXL's cold compile seconds and bought no speed (bench/NOTES.md): the pattern matcher and autotuning each
# pointwise kernel's launch configuration.
COMPILE_OPTIONS = {"dynamic": False, "options": {"pattern_matcher": False, "triton.autotune_pointwise": False}}


def compile_blocks(module, class_names=COMPILE_SETS["blocks"], **compile_kwargs) -> int:
    """Compile every submodule whose class is named in `class_names` (regional compilation), in place.

    Identical blocks share one compiled graph (torch compiles a class's forward once per input shape), so
    a UNet's dozens of transformer blocks cost a few compilations, not one each. A module inside one already
    compiled is left alone (it is part of that graph). Returns how many.
    """
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):
        if getattr(dynamo_config, name, RECOMPILE_LIMIT) < RECOMPILE_LIMIT:
            setattr(dynamo_config, name, RECOMPILE_LIMIT)
    n = 0
    done: list[str] = []
    for path, sub in module.named_modules():
        if type(sub).__name__ in class_names and not any(path.startswith(d + ".") or d == "" for d in done):
            sub.compile(**compile_kwargs)
            sub._compiled_call_impl = _block_inputs(sub._compiled_call_impl,
                                                    type(sub).__name__ in GRAD_INPUT_CLASSES)
            done.append(path)
            n += 1
    return n


# Blocks whose first input is made to require a gradient when it does not (see `_block_inputs`). Only blocks
# that hold LoRA layers themselves: their backward runs anyway, and the input's gradient is a few extra
# products. A ResnetBlock2D has none, so for it the same would start a backward through the convolutions
# before the first attention (SDXL: two 128x128 ResNets) that nothing needs.
GRAD_INPUT_CLASSES = ("BasicTransformerBlock", "Transformer2DModel")


def _block_inputs(compiled: Callable, grad_input: bool) -> Callable:
    """Wrap a compiled block's call:

    - ``grad_input``: while autograd records, a first input that does not require a gradient is handed over
      as a detached copy that does. The first transformer block of a UNet gets its input from frozen layers
      only (no gradient), every later one from LoRA layers: to dynamo these are two signatures, so the same
      block width was compiled twice, forward and backward (SDXL: three graphs, two of 640 channels). With one
      signature per width SDXL compiles two. The gradient this computes for the
      input is dropped with the step's autograd graph.
    - CPU tensors are made contiguous. With a strided view as input (SD 1.5's transformer blocks get
      ``permute(0, 2, 3, 1).reshape(...)`` of the 1x1 proj_in output) inductor's CPU code returned a wrong
      gradient for that input (torch 2.13: 7% off; the LoRA layers upstream of the block then trained on it)
      while the forward was right. On CUDA the same block was exact (bench/NOTES.md), so GPU tensors pass
      as they are: the copy would cost a pass over the input for nothing.
    """
    def fix(t):
        return t.contiguous() if isinstance(t, torch.Tensor) and t.device.type == "cpu" else t

    def call(*args, **kwargs):
        args = tuple(fix(a) for a in args)
        if (grad_input and args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point()
                and not args[0].requires_grad and torch.is_grad_enabled()):
            args = (args[0].detach().requires_grad_(True),) + args[1:]
        return compiled(*args, **{k: fix(v) for k, v in kwargs.items()})

    return call


def compiled(module) -> int:
    """How many submodules of `module` run a compiled forward (`compile_blocks`)."""
    return sum(getattr(sub, "_compiled_call_impl", None) is not None for sub in module.modules())


def uncompile_blocks(module) -> int:
    n = 0
    for sub in module.modules():
        if getattr(sub, "_compiled_call_impl", None) is not None:
            sub._compiled_call_impl = None
            n += 1
    return n
