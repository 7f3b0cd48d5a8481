"""Speed-ups for a diffusion UNet, shared by training and the preview (neither owns them).

One surface: ``prepare(model, options) -> Accel`` changes `model` as `options` ask and returns the record of
what it changed; ``undo(accel)`` takes it back; ``accel.stats()`` says what is installed now, counted by each
kernel module. The caller reads the record (``autocast``, ``channels_last``, ``sdpa_backend``) to set up its
own step; nothing is written onto the caller's objects.

Invariants:
- every change keeps the arithmetic the same up to low-precision rounding; whatever a kernel does not cover,
  at install or at call time, runs the library's own forward;
- the default `Options` change nothing: each speed-up is asked for by name (`Options.training` is the
  training engine's set);
- `undo` leaves the model as `prepare` found it (its own forwards, NCHW maps, uncompiled, no graphs), except
  int8 storage, a one-way change of the frozen weights.

Modules: `fast_kernels` (LoRA Linear forward, regional compile, attention backend, the Triton self-check
mechanism), `fast_qkv`, `fast_proj`, `fast_norm`, `fast_geglu`, `fast_layernorm`, `fast_block` (Triton and
layout kernels), `triton_check` (which kernel path a device gets, and why), `int8_base` (8-bit frozen
weights), `graphs` (CUDA-graph capture of a training step, `FastStep`, and of an inference forward,
`GraphedForward`). Measured figures: bench/NOTES.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from lora_studio.core.accel import fast_kernels as fk

# What `Options.compile` may name (see fast_kernels.COMPILE_SETS).
COMPILE_SETS = fk.COMPILE_SETS


@dataclass(frozen=True)
class Options:
    """What `prepare` changes. All off by default."""

    weight_dtype: torch.dtype = torch.bfloat16  # the frozen weights' dtype (the pure step needs bf16/fp16)
    fast_lora: bool = False  # peft's LoRA Linear forward without its extra memory passes
    pure: bool = False  # no autocast where every LoRA layer is on the fast forward and the weights are 16-bit
    channels_last: bool = False  # with the pure step, on CUDA with Triton: channels-last maps, fast_norm's GroupNorm
    fuse_qkv: bool = False  # self-attention's q/k/v as one product (fast_qkv)
    fast_proj: bool = False  # Transformer2DModel's projections without layout copies (fast_proj)
    fast_geglu: bool = False  # the feed-forwards' GEGLU on Triton (fast_geglu)
    fast_ln: bool = False  # LayerNorms on Triton with the blocks' residual adds inside (fast_layernorm, fast_block)
    compile: str | None = None  # a COMPILE_SETS name: regional torch.compile
    sdpa: str | None = None  # an attention backend for the caller's step (fast_kernels.sdpa_context)
    int8: bool = False  # frozen Linears stored in 8 bits (int8_base)
    int8_peft: bool = False  # ... as PeftInt8Linear (peft can fuse LoRAs into it: the preview)
    int8_device: Any = None  # ... quantised layer by layer on this device (None: where they are)
    graphs: bool = False  # the module's inference forward replayed from CUDA graphs (graphs.GraphedForward)
    on_warning: Callable[[str], None] | None = field(default=None, compare=False)

    @classmethod
    def training(cls, weight_dtype=torch.bfloat16, *, pure: bool = True, compile: str | None = None,
                 sdpa: str | None = None, on_warning: Callable[[str], None] | None = None) -> "Options":
        """The training engine's fast path: every kernel speed-up on; `compile` from `compile_choice`."""
        return cls(weight_dtype=weight_dtype, fast_lora=True, pure=pure, channels_last=True, fuse_qkv=True,
                   fast_proj=True, fast_geglu=True, fast_ln=True, compile=compile, sdpa=sdpa, on_warning=on_warning)


@dataclass
class Accel:
    """What `prepare` changed on `model`, and the graphs built on it since."""

    model: torch.nn.Module
    options: Options
    autocast: bool = True  # False: the caller's step runs without autocast (the pure low-precision step)
    channels_last: bool = False  # the model's maps are channels-last: feed it channels-last inputs
    sdpa_backend: str | None = None  # the attention backend the caller's step should use
    int8_saved_bytes: int = 0
    graphed: Any = None  # graphs.GraphedForward installed on the model (options.graphs)
    step: Any = None  # graphs.FastStep built by `capture_step`
    step_stats: dict | None = None  # the step's record, kept by `end_step` when its graphs went

    def capture_step(self, step_fn: Callable, *, device, params: list,
                     on_warning: Callable[[str], None] | None = None):
        """Wrap a training step in `graphs.FastStep` (one CUDA graph per batch shape). If its first warm-up
        fails to build a compiled block, the blocks run uncompiled (said through `on_warning`)."""
        from lora_studio.core.accel import graphs

        self.step = graphs.FastStep(step_fn, device=device, params=params, on_warning=on_warning,
                                    fallback=self._uncompile, cudnn_benchmark=not self.channels_last)
        return self.step

    def end_step(self) -> None:
        """Training is over: keep the step's record and let the step go, with its graphs, their memory pool and
        what the wrapped step holds (optimizer state, static batches), so the final samples find that room."""
        if self.step is not None:
            self.step_stats = self.step.stats()
            self.step = None

    def _uncompile(self, exc: BaseException) -> None:
        if not fk.uncompile_blocks(self.model):
            raise exc
        warn = self.options.on_warning or (lambda msg: None)
        warn(f"fast path: compiling the UNet's blocks failed ({type(exc).__name__}: "
             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); they run uncompiled.")

    def stats(self) -> dict[str, Any]:
        """The record for a run's result: the step graphs' counters, and what is installed on the model now."""
        from lora_studio.core.accel import fast_block, fast_geglu, fast_layernorm, fast_proj, fast_qkv
        from lora_studio.core.accel.triton_check import kernel_path

        m = self.model
        out: dict[str, Any] = self.step.stats() if self.step is not None else dict(self.step_stats or {})
        out.update(pure_low_precision=not self.autocast, compiled_modules=fk.compiled(m),
                   fast_lora=fk.installed_fast_lora(m), fused_qkv=fast_qkv.installed(m), fast_proj=fast_proj.installed(m),
                   fast_geglu=fast_geglu.installed(m), fast_layernorm=fast_layernorm.installed(m),
                   fast_block=fast_block.installed(m), channels_last=self.channels_last)
        p = next(m.parameters(), None)
        if p is not None:  # which kernel path this device gets, and why not the fast one (triton_check)
            out["kernels"] = kernel_path(p.device)
        if self.graphed is not None:
            out.update(forward_graphs=sum(g is not None for g in self.graphed.graphs.values()),
                       forward_replays=self.graphed.replays)
        return out


def prepare(model: torch.nn.Module, options: Options) -> Accel:
    """Apply `options` to `model` in place; return what changed. Order matters and is fixed here: int8
    storage first (the LoRA layers must already be in), the fast LoRA forward before the kernels that build
    on it (fused q/k/v), compilation last (it compiles the patched forwards)."""
    accel = Accel(model, options)
    if options.int8:
        from lora_studio.core.accel.int8_base import Int8Linear, PeftInt8Linear, quantize_frozen_linears

        accel.int8_saved_bytes = quantize_frozen_linears(
            model, cls=PeftInt8Linear if options.int8_peft else Int8Linear, device=options.int8_device)
    fast = fk.install_fast_lora(model) if options.fast_lora else 0
    # A LoRA layer left on peft's forward (convolutions, dropout, DoRA) would compute in fp32 without
    # autocast (peft casts its input to the fp32 adapter dtype): such models keep autocast.
    pure = (options.pure and options.fast_lora and fast == fk.count_lora_layers(model)
            and options.weight_dtype in (torch.bfloat16, torch.float16))
    accel.autocast = not pure
    if pure and options.channels_last:
        accel.channels_last = channels_last_unet(model)
    accel.sdpa_backend = options.sdpa
    if options.fuse_qkv:
        from lora_studio.core.accel.fast_qkv import install_fused_qkv

        install_fused_qkv(model)
    if options.fast_proj:
        from lora_studio.core.accel.fast_proj import install_fast_proj

        install_fast_proj(model)
    if options.fast_geglu:
        from lora_studio.core.accel.fast_geglu import install_fast_geglu

        install_fast_geglu(model)
    if options.fast_ln:
        from lora_studio.core.accel.fast_block import install_fast_block
        from lora_studio.core.accel.fast_layernorm import install_fast_layernorm

        install_fast_layernorm(model)
        install_fast_block(model)
    if options.compile:
        fk.compile_blocks(model, COMPILE_SETS[options.compile], **fk.COMPILE_OPTIONS)
    if options.graphs:
        from lora_studio.core.accel.graphs import GraphedForward

        accel.graphed = GraphedForward(model).install()
    return accel


def undo(accel: Accel) -> None:
    """Take back what `prepare` did to the model (int8 storage aside): the forward graphs, compilation, every
    forward it patched, channels-last maps back to NCHW. What it did not install is left alone."""
    from lora_studio.core.accel import fast_block, fast_geglu, fast_layernorm, fast_norm, fast_proj, fast_qkv

    model, opts = accel.model, accel.options
    if accel.graphed is not None:
        accel.graphed.uninstall()
        accel.graphed = None
    if opts.compile:
        fk.uncompile_blocks(model)
    if opts.fast_ln:
        fast_block.uninstall_fast_block(model)
        fast_layernorm.uninstall_fast_layernorm(model)
    if opts.fast_geglu:
        fast_geglu.uninstall_fast_geglu(model)
    if opts.fast_proj:
        fast_proj.uninstall_fast_proj(model)
    if opts.fuse_qkv:
        fast_qkv.uninstall_fused_qkv(model)
    if opts.fast_lora:
        fk.uninstall_fast_lora(model)
    if accel.channels_last and fast_norm.uninstall_nhwc_group_norm(model):
        model.to(memory_format=torch.contiguous_format)
    accel.autocast, accel.channels_last, accel.sdpa_backend = True, False, None


def channels_last_unet(unet) -> bool:
    """Make a CUDA UNet channels-last with `fast_norm`'s GroupNorms; False (and nothing changed) without CUDA
    or Triton, where ATen's GroupNorm would copy every channels-last map to NCHW and back (slower than NCHW)."""
    from lora_studio.core.accel.fast_norm import install_nhwc_group_norm

    p = next(unet.parameters(), None)
    if p is None or not p.is_cuda or not install_nhwc_group_norm(unet):  # (the install checks its kernels)
        return False
    unet.to(memory_format=torch.channels_last)
    return True


def compile_choice(compile_unet: str = "auto") -> str | None:
    """The `COMPILE_SETS` name to compile for a config's ``compile_unet``: "auto" and "off" compile nothing
    (the first step starts in seconds; the hand-written kernels reach compiled speed, bench/NOTES.md),
    "blocks" / "regions" are for long runs. The config has already checked the value."""
    return None if compile_unet in ("auto", "off") else compile_unet


__all__ = ["Accel", "Options", "channels_last_unet", "compile_choice", "prepare", "undo"]
