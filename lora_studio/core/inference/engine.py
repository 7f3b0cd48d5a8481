"""The preview engine: one base model, N named LoRAs, a weight slider each, images on request.

Weights are applied by *fusing*: every LoRA layer's base weight is restored from a snapshot taken when
its first adapter arrived, then ``sum(w_i * delta_i)`` is added, and the adapters' own forward passes
are switched off. A denoising step then costs what the base model costs, whatever the number of
LoRAs, and a slider change costs one pass over the LoRA layers (no reload, no drift: restoring from the
snapshot is exact where subtracting a fused delta again would accumulate rounding).
``mode="live"`` keeps diffusers' live adapters instead (for comparison and benchmarks).

What a slider move costs beyond the denoising itself is kept small:
- only the layers whose fused weight actually changes are recomputed (one fp32 ``addmm`` per adapter from
  factors kept at load time), and written in place with ``copy_``;
- prompt embeddings are cached per (prompt, negative prompt, text-encoder LoRA weights): a slider that
  only moves UNet layers never re-runs the text encoders; adding or removing a LoRA empties the cache;
- on CUDA the UNet forward is replayed from a CUDA graph (``GraphedForward``, captured once per image
  size). Weight changes are in-place copies, so the graph stays valid across slider moves; anything that
  changes modules (adding/removing adapters, live adapter scales) resets it. Where capture fails the
  forward runs eagerly;
- on cards with bf16 the whole pipeline runs in bf16 (bf16 has fp32's range, so the SDXL VAE cannot
  overflow to NaN and diffusers' per-image fp32 upcast of the VAE is skipped); fp16 cards keep fp16
  with that upcast.

Low-memory mode (``low_memory``; on by itself for SDXL on cards under 16 GiB, SD 1.5 under 6 GiB): the text
encoders stay in system memory and visit the GPU only to encode a prompt the cache does not hold, the
snapshots of the LoRA layers' original weights stay in (pinned) system memory, and the VAE decodes in tiles.
The UNet stays on the GPU, so the denoising loop and its CUDA graph are unchanged.

8-bit UNet (``int8_unet``; on by itself for SDXL on cards under 10 GiB): the UNet's large Linear weights are
stored as int8 rows with a scale each (`core.accel.int8_base.PeftInt8Linear`, dequantised inside each forward), SDXL's
UNet 4.8 -> 2.7 GiB. Fusing then writes int8 too: a slider move dequantises each changed layer's snapshot,
adds the LoRAs and rounds the sum back to int8 in place (the CUDA graph stays valid).

Driven from a GUI thread-worker: ``generate(request, emit, stop)`` reports per-step progress through the
typed events and honours ``stop()`` at each step boundary.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lora_studio.core.events import Finished, Progress, Started
from lora_studio.errors import LoraStudioError

WEIGHT_RANGE = (-2.0, 2.0)
SCHEDULERS = {
    "euler": "Euler", "euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_karras": "DPM++ 2M Karras",
    "ddim": "DDIM", "unipc": "UniPC",
}
_ALIASES = {label.lower(): key for key, label in SCHEDULERS.items()}


def scheduler_key(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key.replace(" ", "_").replace("+", "p"))
    if key not in SCHEDULERS:
        raise LoraStudioError(f"unknown scheduler {name!r}.", f"use one of: {', '.join(SCHEDULERS.values())}.")
    return key


def make_scheduler(name: str, base_config):
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                           EulerDiscreteScheduler, UniPCMultistepScheduler)

    key = scheduler_key(name)
    cfg = dict(base_config)
    if key == "euler":
        return EulerDiscreteScheduler.from_config(cfg)
    if key == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(cfg)
    if key in ("dpmpp_2m", "dpmpp_2m_karras"):
        return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2,
                                                       use_karras_sigmas=key.endswith("karras"))
    if key == "ddim":
        return DDIMScheduler.from_config(cfg)
    return UniPCMultistepScheduler.from_config(cfg)


@dataclass(frozen=True)
class PreviewRequest:
    prompt: str
    negative: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = 7.5
    width: int | None = None  # None: the model's native size
    height: int | None = None
    scheduler: str = "euler"

    def to_dict(self) -> dict:
        return asdict(self)


class _Cancelled(Exception):
    pass


# GPU memory (GiB) under which the preview runs in low-memory mode by itself. Full mode measured on an H100
# (bench/results/archive/preview_engine_h100_cudnn_on.md, bf16, two LoRAs): SDXL 1024 11.7 GiB allocated, SD 1.5 512 3.0.
LOW_MEMORY_BELOW_GIB = {"sdxl": 16.0, "sd": 6.0}
# An 8-bit UNet for SDXL on 6-8 GB cards: low memory alone peaks at 6.9 GiB allocated, 7.7 reserved (H100,
# bench/NOTES.md), more than an 8 GB card has left beside its CUDA context. SD 1.5's UNet is mostly
# convolutions (8 bits would save 0.25 of its 1.6 GiB): never on by itself.
INT8_UNET_BELOW_GIB = {"sdxl": 10.0}


def _card_gib(device) -> float | None:
    """The CUDA card's memory in GiB, or None for anything else (nothing to save there)."""
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30


def low_memory_default(sdxl: bool, device) -> bool:
    """Whether a preview of this model family on this device should run in low-memory mode."""
    gib = _card_gib(device)
    return gib is not None and gib < LOW_MEMORY_BELOW_GIB["sdxl" if sdxl else "sd"]


def int8_unet_default(sdxl: bool, device) -> bool:
    """Whether a preview of this model family on this device should store its UNet in 8 bits."""
    gib = _card_gib(device)
    return sdxl and gib is not None and gib < INT8_UNET_BELOW_GIB["sdxl"]


def tile_vae(vae) -> None:
    """Decode in tiles of half the model's native size (SDXL: 512 px). diffusers' default tile is the native
    size, so a native-size picture would still decode in one piece. A tile keeps at least 32 latents (smaller
    tiles show seams: the demo VAEs, native 64 px, keep the default and decode their own size untiled)."""
    if not (hasattr(vae, "enable_tiling") and hasattr(vae, "tile_latent_min_size")):
        return
    scale = 2 ** (len(vae.config.block_out_channels) - 1)  # pixels per latent
    tile = int(vae.config.sample_size) // 2
    if tile >= 32 * scale:
        vae.tile_sample_min_size, vae.tile_latent_min_size = tile, tile // scale
    vae.enable_tiling()


def _default_device_dtype(device, dtype):
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        from lora_studio.core.system import precision_dtype, working_precision

        dtype = precision_dtype(working_precision(device))
    return device, dtype


class _FusedLayer:
    """One LoRA layer in fused mode: its base layer, the snapshot, per-adapter factors, what it holds now."""

    __slots__ = ("layer", "base", "snapshot", "factors", "state")

    def __init__(self, layer, snapshot, factors):
        self.layer, self.base, self.snapshot, self.factors = layer, layer.get_base_layer(), snapshot, factors
        self.state: tuple = ()  # ((adapter, weight), ...) fused into the base right now; () = the snapshot


# A base layer's weight is held by `_base_tensors(base)`: ``(weight,)``, or ``(q, scale)`` for an 8-bit layer.
# Snapshots are copies of those tensors; the helpers below are the only places that tell the two apart.
def _is_int8(base) -> bool:
    from lora_studio.core.accel.int8_base import Int8Linear

    return isinstance(base, Int8Linear)


def _base_tensors(base) -> tuple:
    return (base.q, base.scale) if _is_int8(base) else (base.weight,)


def _fp32_weight(base, snapshot, device):
    """The snapshot's weight in fp32 on `device`, a fresh tensor (fusing adds to it)."""
    import torch

    from lora_studio.core.accel.int8_base import dequantize

    if _is_int8(base):
        q, scale = (t.to(device) for t in snapshot)
        return dequantize(q, scale, torch.float32)
    return snapshot[0].to(device=device, dtype=torch.float32, copy=True)


def _store_weight(base, weight=None, snapshot=None) -> None:
    """Write a fused fp32 `weight` (8 bits: rounded back per row), or copy a `snapshot` back, in place:
    captured CUDA graphs read these very tensors."""
    if snapshot is not None:
        for tensor, saved in zip(_base_tensors(base), snapshot):
            tensor.copy_(saved)
    elif _is_int8(base):
        base.requantize_(weight)
    else:
        base.weight.copy_(weight)


def _factors(layer, name):
    """``(B * scaling, A)`` in fp32 for a plain linear LoRA (delta = B @ A); None: use peft's get_delta_weight."""
    import torch
    from peft.tuners.lora.layer import Linear

    a, b = layer.lora_A[name], layer.lora_B[name]
    if (type(layer) is not Linear or getattr(layer, "fan_in_fan_out", False)
            or getattr(layer, "use_dora", {}).get(name) or not isinstance(a, torch.nn.Linear)
            or not isinstance(b, torch.nn.Linear)):
        return None
    return b.weight.detach().float() * float(layer.scaling[name]), a.weight.detach().float()


class PreviewEngine:
    """``PreviewEngine(model)`` loads the base once; LoRAs and weights change without reloading it."""

    def __init__(self, model=None, device=None, dtype=None, mode: str = "fused", pipe=None, *, graph: bool = True,
                 prompt_cache: bool = True, low_memory: bool | None = None, int8_unet: bool | None = None):
        from lora_studio.core.models.loader import load_pipeline, resolve_model

        if mode not in ("fused", "live"):
            raise ValueError("mode is 'fused' or 'live'")
        if pipe is not None:  # a given pipeline decides where the engine runs, unless told otherwise
            device = device if device is not None else pipe.unet.device
            dtype = dtype if dtype is not None else pipe.unet.dtype
        self.device, self.dtype = _default_device_dtype(device, dtype)
        self.mode = mode
        self.model = model
        self.base_loads = 0
        self.adapter_loads = 0
        ref = resolve_model(model) if pipe is None else None  # read once: the family decides the placement
        sdxl = _prompt_style(pipe) == "xl" if pipe is not None else ref.family == "sdxl"
        if low_memory is None:
            low_memory = low_memory_default(sdxl, self.device)
        if int8_unet is None:
            int8_unet = int8_unet_default(sdxl, self.device)
        self.low_memory = bool(low_memory)  # on the CPU it changes no placement, only the code paths
        self.int8_unet = bool(int8_unet)
        staged = False  # loaded into system memory first, placed below
        if pipe is None:
            # Low memory or 8 bits: nothing is loaded onto the GPU that does not stay there.
            staged = self.low_memory or self.int8_unet
            pipe = load_pipeline(ref, torch_dtype=self.dtype, device="cpu" if staged else self.device)
            self.base_loads += 1
        self.pipe = pipe
        if self.int8_unet:
            from lora_studio.core.accel import Options, prepare

            # Each layer quantised on the device it will run on, one 16-bit layer there at a time.
            pipe.unet.requires_grad_(False)  # nothing here trains (a loaded model's weights want gradients)
            prepare(pipe.unet, Options(int8=True, int8_peft=True, int8_device=self.device))
        if self.low_memory:
            self._place_low_memory()
        elif staged or self.int8_unet:  # (8 bits: its quantised layers are on the device already)
            pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self._base_scheduler_config = dict(pipe.scheduler.config)
        self._schedulers: dict[str, object] = {}
        self._loras: dict[str, Path] = {}  # adapter name -> file
        self._weights: dict[str, float] = {}
        self._applied: dict[str, float] | None = {}  # what the model weights currently hold
        self._snapshots: dict[int, tuple] = {}  # id(lora layer) -> (layer, original base weight)
        self._fused: list[_FusedLayer] | None = None  # fused mode's layer plan; None: rebuild (modules changed)
        self._te_adapters: set[str] = set()  # adapters with text-encoder layers
        self._prompts: dict[tuple, dict] = {}  # (prompt, negative, text-encoder weights) -> embeddings
        self.prompt_cache = bool(prompt_cache)
        self.prompt_encodes = 0
        self.last_apply_s = 0.0
        self.last_apply_layers = 0  # layers whose fused weight the last apply recomputed
        self.graphed = None  # GraphedForward on the UNet (CUDA only)
        self._graph_accel = None  # what core.accel.prepare installed for it
        self.use_graph(graph)

    # ------------------------------------------------------------------ adapters and weights

    @property
    def loras(self) -> dict[str, Path]:
        return dict(self._loras)

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    def use_graph(self, on: bool = True) -> None:
        """Replay the UNet forward from a CUDA graph (on CUDA; elsewhere this does nothing)."""
        import torch

        from lora_studio.core.accel import Options, prepare, undo

        if self._graph_accel is not None:
            undo(self._graph_accel)
            self._graph_accel = self.graphed = None
        if on and str(self.device).startswith("cuda") and torch.cuda.is_available():
            self._graph_accel = prepare(self.pipe.unet, Options(graphs=True))
            self.graphed = self._graph_accel.graphed

    def _text_encoders(self) -> list:
        return [m for m in (getattr(self.pipe, "text_encoder", None), getattr(self.pipe, "text_encoder_2", None))
                if m is not None]

    def _place_low_memory(self) -> None:
        import torch

        for module in self._text_encoders():
            module.to("cpu")
        for module in (self.pipe.unet, self.pipe.vae):
            module.to(self.device)
        tile_vae(self.pipe.vae)
        torch.cuda.empty_cache()

    @contextlib.contextmanager
    def _encoders_on_gpu(self):
        """Low memory: the text encoders on the GPU for the duration of one prompt encoding, then back."""
        if not self.low_memory:
            yield
            return
        import torch

        try:
            for module in self._text_encoders():
                module.to(self.device)
            yield
        finally:
            for module in self._text_encoders():
                module.to("cpu")
            torch.cuda.empty_cache()  # give the encoders' blocks back before the UNet's activations need them

    def _modules_changed(self) -> None:
        """Adapters were added or removed: captured graphs, the fused plan and cached prompts are stale."""
        if self.graphed is not None:
            self.graphed.reset()
        self._fused = None
        self._prompts.clear()

    def set_loras(self, loras) -> None:
        """Make exactly these ``[(path, name)]`` the loaded adapters (new ones loaded, missing ones removed)."""
        wanted = {}
        for item in loras:
            path, name = (item, None) if isinstance(item, (str, Path)) else item
            path = Path(path)
            wanted[name or path.stem] = path
        for name in [n for n in self._loras if n not in wanted or wanted[n] != self._loras[n]]:
            self.remove_lora(name)
        for name, path in wanted.items():
            if name not in self._loras:
                self.add_lora(path, name)

    def add_lora(self, path, name: str | None = None, weight: float = 1.0) -> str:
        from lora_studio.core.lora_files import check_fits, peft_state_dict, read_lora

        path = Path(path)
        name = _adapter_name(name or path.stem)
        if name in self._loras:
            self.remove_lora(name)
        check_fits(path, self.pipe)  # refuses another family / width before any tensor is read
        lora = read_lora(path, unet_config=self.pipe.unet.config)
        self._restore_base()  # peft wraps layers around the current weights: give it the originals
        sd = {k: v.to(self.dtype) for k, v in peft_state_dict(lora).items()}
        _quiet_transformers()
        self._modules_changed()
        self.pipe.load_lora_weights(sd, adapter_name=name)
        self.adapter_loads += 1
        self._loras[name] = path
        self._weights[name] = _check_weight(weight, name)
        if any(name in layer.lora_A for layer in self._lora_layers(("text_encoder", "text_encoder_2"))):
            self._te_adapters.add(name)
        self._applied = None
        return name

    def remove_lora(self, name: str) -> None:
        if name not in self._loras:
            return
        self._restore_base()
        self._modules_changed()
        self.pipe.delete_adapters(name)
        self._te_adapters.discard(name)
        del self._loras[name]
        self._weights.pop(name, None)
        self._applied = None

    def set_weights(self, weights: dict[str, float]) -> None:
        for name, w in weights.items():
            if name not in self._loras:
                raise LoraStudioError(f"no LoRA named {name!r} is loaded.", f"loaded: {', '.join(self._loras) or 'none'}.")
            self._weights[name] = _check_weight(w, name)

    def _lora_layers(self, components=("unet", "text_encoder", "text_encoder_2")):
        from peft.tuners.lora import LoraLayer

        for comp in components:
            model = getattr(self.pipe, comp, None)
            if model is None:
                continue
            for module in model.modules():
                if isinstance(module, LoraLayer):
                    yield module

    def _restore_base(self) -> None:
        import torch

        with torch.no_grad():
            for layer, snap in self._snapshots.values():
                _store_weight(layer.get_base_layer(), snapshot=snap)
        for fused in self._fused or ():
            fused.state = ()
        self._applied = {}

    def _snapshot(self, layer) -> tuple:
        """The layer's original base weight (taken once, before any LoRA was fused into it): the tensors of
        `_base_tensors` (an 8-bit base: its int8 rows and scales)."""
        import torch

        entry = self._snapshots.get(id(layer))
        if entry is None or entry[0] is not layer:
            snap = []
            for tensor in _base_tensors(layer.get_base_layer()):
                tensor = tensor.detach()
                if self.low_memory and tensor.device.type == "cuda":  # in pinned host memory: fast to copy back
                    snap.append(torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu",
                                            pin_memory=True).copy_(tensor))
                else:
                    snap.append(tensor.clone())
            entry = self._snapshots[id(layer)] = (layer, tuple(snap))
        return entry[1]

    def _fused_plan(self) -> list[_FusedLayer]:
        if self._fused is None:
            plan = []
            for layer in self._lora_layers():
                layer.enable_adapters(False)  # the fused weights carry the LoRAs; no per-step adapter cost
                plan.append(_FusedLayer(layer, self._snapshot(layer),
                                        {name: _factors(layer, name) for name in layer.lora_A}))
            # Weights hold the snapshots here: every add/remove restores the base before changing modules.
            self._fused = plan
        return self._fused

    def _apply(self) -> None:
        import torch

        active = {n: w for n, w in self._weights.items() if w != 0.0}
        if self.mode == "live":
            if self._applied != active:
                self._restore_base()
                if self.graphed is not None:
                    self.graphed.reset()  # adapter scales are Python floats baked into a captured graph
                names = list(self._loras)
                if names:
                    self.pipe.enable_lora()
                    self.pipe.set_adapters(names, [self._weights[n] for n in names])
                self._applied = dict(active)
            return
        if self._applied == active:
            return
        t0 = time.perf_counter()
        changed = 0
        with torch.no_grad():
            for fused in self._fused_plan():
                want = tuple((name, active[name]) for name in fused.factors if name in active)
                if want == fused.state:
                    continue  # this layer already holds exactly these weights
                if want:
                    acc = _fp32_weight(fused.base, fused.snapshot, _base_tensors(fused.base)[0].device)
                    for name, w in want:
                        factors = fused.factors[name]
                        if factors is None:
                            acc.add_(fused.layer.get_delta_weight(name).float(), alpha=w)
                        else:
                            acc.addmm_(factors[0], factors[1], alpha=w)
                    _store_weight(fused.base, acc)
                else:
                    _store_weight(fused.base, snapshot=fused.snapshot)
                fused.state = want
                changed += 1
        self._applied = dict(active)
        self.last_apply_layers = changed
        self.last_apply_s = time.perf_counter() - t0

    # ------------------------------------------------------------------ generation

    def scheduler(self, name: str):
        key = scheduler_key(name)
        if key not in self._schedulers:
            self._schedulers[key] = make_scheduler(key, self._base_scheduler_config)
        return self._schedulers[key]

    def generate(self, request: PreviewRequest, emit=None, stop=None):
        """A PIL image, or None when ``stop()`` turned true (checked before and after every step)."""
        import torch

        emit = emit or (lambda event: None)
        stop = stop or (lambda: False)
        if stop():
            return None
        self._apply()
        self.pipe.scheduler = self.scheduler(request.scheduler)
        total = int(request.steps)
        emit(Started(total_steps=total, phase="generate", description=request.prompt))
        t0 = time.perf_counter()

        def on_step(pipe, step, timestep, kwargs):
            done = step + 1
            elapsed = time.perf_counter() - t0
            rate = done / elapsed if elapsed > 0 else None
            emit(Progress(step=done, total=total, it_per_s=rate,
                          eta_s=(total - done) / rate if rate else None, phase="generate"))
            if stop():
                raise _Cancelled()
            return kwargs

        kwargs = dict(self._prompt_kwargs(request.prompt, request.negative or None),
                      num_inference_steps=total, guidance_scale=float(request.guidance),
                      generator=torch.Generator("cpu").manual_seed(int(request.seed)),
                      callback_on_step_end=on_step)
        if request.width:
            kwargs["width"] = int(request.width)
        if request.height:
            kwargs["height"] = int(request.height)
        try:
            with torch.inference_mode():
                image = self.pipe(**kwargs).images[0]
        except _Cancelled:
            return None
        emit(Finished({"seconds": time.perf_counter() - t0, "seed": int(request.seed), "weights": self.weights}))
        return image

    def _prompt_kwargs(self, prompt: str, negative: str | None) -> dict:
        """The pipeline's prompt arguments: cached embeddings where the pipeline takes them, else the text.

        The key holds the weights of the adapters that reach the text encoders (as applied right now), so a
        slider move on such an adapter encodes again and one on a UNet-only adapter does not.
        """
        import torch

        style = _prompt_style(self.pipe) if self.prompt_cache or self.low_memory else None
        if style is None:
            return {"prompt": prompt, "negative_prompt": negative}
        te = tuple(sorted((n, w) for n, w in (self._applied or {}).items() if n in self._te_adapters))
        key = (prompt, negative, te)
        hit = self._prompts.pop(key, None)
        if hit is None:
            device = self.pipe._execution_device
            with self._encoders_on_gpu(), torch.inference_mode():  # modules move outside inference mode
                if style == "xl":
                    pe, npe, pooled, npooled = self.pipe.encode_prompt(
                        prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True,
                        negative_prompt=negative)
                    hit = dict(prompt_embeds=pe, negative_prompt_embeds=npe, pooled_prompt_embeds=pooled,
                               negative_pooled_prompt_embeds=npooled)
                else:
                    pe, npe = self.pipe.encode_prompt(prompt, device, 1, True, negative_prompt=negative)
                    hit = dict(prompt_embeds=pe, negative_prompt_embeds=npe)
            self.prompt_encodes += 1
            if not self.prompt_cache:
                return dict(hit)
            while len(self._prompts) >= _PROMPT_CACHE_SIZE:
                self._prompts.pop(next(iter(self._prompts)))  # least recently used first
        self._prompts[key] = hit
        return dict(hit)

    # ------------------------------------------------------------------ comparison grids

    def grid(self, request: PreviewRequest, rows, seeds, emit=None, stop=None):
        """A labelled grid: one row per ``(label, {adapter: weight})``, one column per seed. None if stopped."""
        saved = dict(self._weights)
        cells = []
        try:
            for label, weights in rows:
                self.set_weights(weights)
                row = self._seed_row(request, seeds, emit, stop)
                if row is None:
                    return None
                cells.append((label, row))
        finally:
            self._weights.update(saved)
        return labelled_grid(cells, [f"seed {s}" for s in seeds])

    def _seed_row(self, request: PreviewRequest, seeds, emit, stop):
        """One grid row: the request at each seed; None when cancelled."""
        row = []
        for seed in seeds:
            image = self.generate(replace(request, seed=int(seed)), emit, stop)
            if image is None:
                return None
            row.append(image)
        return row

    def weight_grid(self, request: PreviewRequest, adapter: str, weights, seeds, emit=None, stop=None):
        others = {n: w for n, w in self._weights.items() if n != adapter}
        rows = [(f"{adapter} {w:+.2f}", {**others, adapter: float(w)}) for w in weights]
        return self.grid(request, rows, seeds, emit, stop)

    def checkpoint_grid(self, request: PreviewRequest, checkpoints, seeds, weight: float = 1.0, emit=None,
                        stop=None):
        """Rows = training checkpoints ``[(label, path)]`` (each loaded in turn as a temporary adapter)."""
        name = "__checkpoint__"
        saved = dict(self._weights)
        cells = []
        try:
            for label, path in checkpoints:
                self.add_lora(path, name, weight)
                row = self._seed_row(request, seeds, emit, stop)
                if row is None:
                    return None
                cells.append((label, row))
        finally:
            self.remove_lora(name)
            self._weights.update({n: w for n, w in saved.items() if n in self._loras})
        return labelled_grid(cells, [f"seed {s}" for s in seeds])


LABEL_FONT_SIZE = 15


def label_font(size: int = LABEL_FONT_SIZE):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def text_width(text: str, font) -> int:
    """Width of ``text`` as ``draw_text`` draws it (words with a gap of their own between them)."""
    from PIL import Image, ImageDraw

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    words = text.split(" ")
    return int(sum(measure.textlength(w, font=font) for w in words) + _word_gap(font) * (len(words) - 1))


def draw_text(draw, xy, text: str, font, fill="black") -> None:
    """Draw ``text`` word by word: Pillow's default font at small sizes hints its spaces down to nothing
    ("aphotoofsksshape"), so each space gets an explicit gap."""
    x, y = xy
    for word in text.split(" "):
        draw.text((x, y), word, fill=fill, font=font)
        x += draw.textlength(word, font=font) + _word_gap(font)


def _word_gap(font) -> float:
    return max(4.0, 0.35 * getattr(font, "size", 10))


def labelled_grid(rows, column_labels, pad: int = 4, font=None):
    """Paste ``[(row_label, [PIL images])]`` into one image with a header row and a label column."""
    from PIL import Image, ImageDraw

    font = font or label_font()
    cell_w = max(img.width for _, row in rows for img in row)
    cell_h = max(img.height for _, row in rows for img in row)
    line_h = int(font.size * 1.3)
    label_w = max(text_width(label, font) for label, _ in rows) + 2 * pad
    header_h = line_h + 2 * pad
    n_cols = max(len(row) for _, row in rows)
    out = Image.new("RGB", (label_w + n_cols * (cell_w + pad) + pad, header_h + len(rows) * (cell_h + pad) + pad),
                    "white")
    draw = ImageDraw.Draw(out)
    for c, text in enumerate(column_labels):
        x = label_w + pad + c * (cell_w + pad)
        draw_text(draw, (x + (cell_w - text_width(text, font)) // 2, pad), text, font)
    for r, (label, row) in enumerate(rows):
        y = header_h + r * (cell_h + pad)
        draw_text(draw, (pad, y + (cell_h - line_h) // 2), label, font)
        for c, img in enumerate(row):
            out.paste(img.convert("RGB"), (label_w + pad + c * (cell_w + pad), y))
    return out


_PROMPT_CACHE_SIZE = 16


def _prompt_style(pipe) -> str | None:
    """"xl" / "sd" for the pipelines whose prompt embeddings the engine caches; None: pass the text."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if isinstance(pipe, StableDiffusionXLPipeline):
        return "xl"
    if isinstance(pipe, StableDiffusionPipeline):
        return "sd"
    return None


def _check_weight(w, name) -> float:
    w = float(w)
    lo, hi = WEIGHT_RANGE
    if not lo <= w <= hi:
        raise LoraStudioError(f"weight {w} for {name!r} is outside {lo}..{hi}.", "pick a weight between -2 and 2.")
    return w


def _adapter_name(name: str) -> str:
    # peft keys adapters by name inside module paths: no dots.
    return name.replace(".", "_") or "lora"


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
