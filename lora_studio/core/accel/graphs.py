"""The fast training step: one captured CUDA graph per batch shape, replayed instead of ~4k-14k launches.

An eager LoRA step on a diffusion UNet is bound by Python launching kernels, not by the GPU. Capturing
the whole step (forward, loss, backward, gradient clipping, a fused capturable AdamW update, zero grad)
once per batch shape and replaying it removes that cost without a compiler: capture takes about as
long as two eager steps.

The seam: the training loop builds ``step_fn(batch) -> loss`` that does the whole step eagerly and
wraps it: ``step = FastStep(step_fn, device=...)``; ``loss = step(batch)``. What ``step_fn`` must honour
for capture to be correct (it falls back to eager where capture fails, but cannot see these):

- the same Python path on every call (no host-side branching on step counters, no ``.item()``);
- randomness from torch's default generator on the GPU, or passed in the batch;
- an optimizer whose state lives on the GPU and whose learning rate is a GPU tensor
  (``capturable_adamw``); an LR scheduler then ``fill_``s that tensor and the graph sees it;
- gradients cleared inside the step (``zero_grad(set_to_none=True)``), never accumulated across calls.

The first call for a new shape runs the real step eagerly on a side stream (the warm-up that
initialises optimizer state, cuBLAS workspaces and autotuners), then captures the graph without running
it, so no step is taken twice. Later calls copy the batch into the graph's static inputs and replay.
No call synchronises with the host; read the returned loss with ``.item()`` only when it is needed.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

Batch = Any  # dict / list / tuple of tensors and plain values, nested
# Top-level batch entries that change every call but never reach the arithmetic (bookkeeping). They are
# removed before the step sees the batch, eagerly and captured alike, so they neither key a new graph per
# step nor get baked into one. Any other plain value is part of the shape key.
DROP_KEYS = ("micro_step", "step")
# Attributes of the step object whose method calls stay on the host (see _HostCalls).
HOST_ATTRS = ("lr_scheduler",)


def fast_path_reason(config, device) -> str | None:
    """Why the captured step cannot run for this config on this device (None: it can)."""
    device = torch.device(device)
    if not getattr(config, "fast_path", True):
        return "fast_path is off in the config"
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"the fast path needs a CUDA GPU (training on {device.type})"
    if getattr(config, "gradient_accumulation_steps", 1) != 1:
        return "gradient_accumulation_steps > 1 changes the step between calls"
    if getattr(config, "optimizer", "adamw") != "adamw":
        return f"optimizer {config.optimizer!r} cannot be captured (only 'adamw')"
    if getattr(config, "mixed_precision", "bf16") == "fp16":
        return "fp16 needs a gradient scaler that checks for overflow on the host every step"
    if getattr(config, "network", "lora") in ("loha", "lokr"):
        return f"network = {config.network!r}: the fast path carries plain LoRA layers"
    if getattr(config, "lora_dropout", 0.0) > 0 and getattr(config, "gradient_checkpointing", False):
        return "LoRA dropout under gradient checkpointing needs the RNG state restored, which a graph cannot do"
    return None


def capturable_adamw(params, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                     device=None) -> torch.optim.AdamW:
    """AdamW whose every input lives on the GPU: fused kernels, device step counters, a tensor learning rate.

    ``params`` is a list of tensors or of param groups (dicts with ``params`` and an optional ``lr``, e.g. the
    UNet's and the text encoders'); each group gets its own learning-rate tensor and a float ``initial_lr``,
    so a scheduler computes floats and ``fill_``s every group's tensor, with no ``.item()`` per step.
    Off CUDA this is plain AdamW over the same groups, so the same code builds the optimizer everywhere.
    """
    groups = _param_groups(params, lr)
    device = torch.device(device) if device is not None else groups[0]["params"][0].device
    if device.type != "cuda":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return torch.optim.AdamW(tensor_lr_groups(groups, device), lr=torch.tensor(float(lr), device=device),
                             betas=betas, eps=eps, weight_decay=weight_decay, fused=True, capturable=True)


def tensor_lr_groups(groups: list[dict], device) -> list[dict]:
    """Each group's float ``lr`` as a float32 tensor on ``device``, and kept as its float ``initial_lr``."""
    for group in groups:
        rate = float(group["lr"])
        group["lr"] = torch.tensor(rate, dtype=torch.float32, device=device)
        group["initial_lr"] = rate
    return groups


def _param_groups(params, lr: float) -> list[dict]:
    """Copies of the groups (the caller's dicts are not changed), each with a float ``lr``; tensors: one group."""
    params = list(params)
    if not params:
        raise ValueError("capturable_adamw got no parameters")
    if not isinstance(params[0], dict):
        return [{"params": params, "lr": float(lr)}]
    groups = []
    for group in params:
        group = dict(group)
        group["params"] = list(group["params"])
        rate = group.get("lr", lr)
        group["lr"] = float(rate)
        groups.append(group)
    return [g for g in groups if g["params"]]


def lr_tensors_on_device(optimizer, device) -> None:
    """Put tensor learning rates on the GPU (loading a checkpoint with map_location='cpu' moves them off).

    A CPU learning rate would make every captured update copy it from host memory, which capture refuses.
    """
    for group in getattr(optimizer, "param_groups", []):
        lr = group.get("lr")
        if isinstance(lr, torch.Tensor) and lr.device != torch.device(device):
            group["lr"] = lr.to(device)


def capturable_checkpointing(model) -> None:
    """Gradient checkpointing that can be captured: no RNG state is read (the UNet has no dropout).

    torch's default checkpoint saves and restores the CUDA RNG state, which is not allowed while a graph
    is being captured.
    """
    from torch.utils.checkpoint import checkpoint

    def ckpt(module, *args):
        return checkpoint(module.__call__, *args, use_reentrant=False, preserve_rng_state=False)

    model.enable_gradient_checkpointing(gradient_checkpointing_func=ckpt)


# ------------------------------------------------------------------------------------------ pytree-ish
def _flatten(obj, out: list, spec: list):
    if isinstance(obj, torch.Tensor):
        out.append(obj)
        spec.append(("T", tuple(obj.shape), obj.dtype, str(obj.device)))
    elif isinstance(obj, dict):
        spec.append(("D", tuple(obj.keys())))
        for v in obj.values():
            _flatten(v, out, spec)
    elif isinstance(obj, (list, tuple)):
        spec.append(("L" if isinstance(obj, list) else "U", len(obj)))
        for v in obj:
            _flatten(v, out, spec)
    else:
        spec.append(("V", obj))  # a plain value is baked into the graph: it is part of the key


def _rebuild(obj, tensors: list):
    it = iter(tensors)

    def go(o):
        if isinstance(o, torch.Tensor):
            return next(it)
        if isinstance(o, dict):
            return {k: go(v) for k, v in o.items()}
        if isinstance(o, list):
            return [go(v) for v in o]
        if isinstance(o, tuple):
            return tuple(go(v) for v in o)
        return o

    return go(obj)


def _key(batch) -> tuple:
    spec: list = []
    _flatten(batch, [], spec)
    try:
        return tuple(spec)
    except TypeError:
        return None


# The app trains and previews on two threads of one process: in the default ("global") mode a capture on
# one thread makes the other thread's unsafe CUDA calls (a cudaMalloc, a sync) fail. Thread-local mode
# checks only the capturing thread, which is all a capture needs.
CAPTURE_MODE = "thread_local"


class _Graph:
    __slots__ = ("graph", "inputs", "loss", "host_calls")

    def __init__(self, graph, inputs, loss, host_calls):
        self.graph, self.inputs, self.loss, self.host_calls = graph, inputs, loss, host_calls


class _HostCalls:
    """Stands in for a host-side object (an LR scheduler) while the step is captured.

    Its method calls are recorded instead of run, and re-run on the real object after every replay: a
    scheduler's ``step()`` inside the captured step would otherwise be baked into the graph with the
    learning rate of the capture, and its host counters would stop.
    """

    def __init__(self, real, calls: list):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_calls", calls)

    def __getattr__(self, name):
        value = getattr(self._real, name)
        if not callable(value):
            return value

        def record(*args, **kwargs):
            self._calls.append((self._real, name, args, kwargs))

        return record


class FastStep:
    """``step(batch) -> loss``: the wrapped ``step_fn``, replayed from a CUDA graph per batch shape.

    ``active`` says whether graphs are used at all (``reason`` says why not); per shape, a capture that
    fails falls back to the eager step for that shape, reported once through ``on_warning``.
    """

    def __init__(self, step_fn: Callable[[Batch], torch.Tensor], *, device=None, max_graphs: int = 16,
                 on_warning: Callable[[str], None] | None = None, params: list | None = None,
                 drop_keys: tuple[str, ...] = DROP_KEYS, host_attrs: tuple[str, ...] = HOST_ATTRS,
                 optimizer=None, fallback: Callable[[BaseException], None] | None = None,
                 cudnn_benchmark: bool | None = None):
        self.step_fn = step_fn
        # cuDNN autotuning in the warm-up and capture: None = for NCHW steps only. On channels-last maps it
        # picked nothing faster and cost the first step seconds (bench/NOTES.md).
        self.cudnn_benchmark = (not getattr(step_fn, "channels_last", False) if cudnn_benchmark is None
                                else cudnn_benchmark)
        # Called once if the first warm-up step raises (not out of memory): it undoes an optional speed-up
        # (compiled blocks) and the warm-up runs again without it.
        self.fallback = fallback
        self.optimizer = optimizer if optimizer is not None else getattr(step_fn, "optimizer", None)
        self.drop_keys = tuple(drop_keys)
        self.host_attrs = tuple(host_attrs)
        self.device = torch.device(device) if device is not None else (
            torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        self.max_graphs = max_graphs
        self.on_warning = on_warning or (lambda msg: None)
        self.params = list(params) if params is not None else []  # grads to drop after a failed capture
        self.reason: str | None = None
        if self.device.type != "cuda" or not torch.cuda.is_available():
            self.reason = f"the fast path needs a CUDA GPU (training on {self.device.type})"
        self.graphs: dict[tuple, _Graph | None] = {}  # None: this shape runs eagerly
        self.capture_seconds: dict[tuple, float] = {}
        self.replays = 0
        self.eager_calls = 0
        self._pool = None
        self._stream = None

    @property
    def active(self) -> bool:
        return self.reason is None

    def stats(self) -> dict:
        """What the run got from the fast path: replayed steps, eager steps, captured / eager shapes."""
        return {"active": self.active, "reason": self.reason, "replays": self.replays,
                "eager_calls": self.eager_calls, "graphs": sum(v is not None for v in self.graphs.values()),
                "eager_shapes": sum(v is None for v in self.graphs.values()),
                "capture_s": round(sum(self.capture_seconds.values()), 2)}

    def __call__(self, batch: Batch) -> torch.Tensor:
        if self.drop_keys and isinstance(batch, dict):
            batch = {k: v for k, v in batch.items() if k not in self.drop_keys}
        if not self.active:
            self.eager_calls += 1
            return self.step_fn(batch)
        key = _key(batch)
        entry = self.graphs.get(key, False) if key is not None else None
        if entry is False:
            if len(self.graphs) >= self.max_graphs:
                self.graphs[key] = None
                self.on_warning(f"fast path: more than {self.max_graphs} batch shapes; new shapes run eagerly.")
                return self._eager(batch)
            return self._warm_up_and_capture(key, batch)
        if entry is None:
            return self._eager(batch)
        tensors: list = []
        _flatten(batch, tensors, [])
        for dst, src in zip(entry.inputs, tensors):
            dst.copy_(src, non_blocking=True)
        entry.graph.replay()
        for obj, name, args, kwargs in entry.host_calls:
            getattr(obj, name)(*args, **kwargs)
        self.replays += 1
        return entry.loss.clone()

    def _eager(self, batch):
        self.eager_calls += 1
        return self.step_fn(batch)

    def _drop_grads(self) -> None:
        torch.cuda.synchronize(self.device)
        for p in self.params:
            p.grad = None

    def _warm_up_and_capture(self, key, batch) -> torch.Tensor:
        # cuDNN autotuning for this shape only: the warm-up picks each convolution's fastest kernel and the
        # graph keeps it. The process-wide flag is restored (previews in the same process choose their own).
        old = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        try:
            return self._warm_up_and_capture_inner(key, batch)
        finally:
            torch.backends.cudnn.benchmark = old

    def _warm_up_and_capture_inner(self, key, batch) -> torch.Tensor:
        t0 = time.perf_counter()
        if self.optimizer is not None:
            lr_tensors_on_device(self.optimizer, self.device)
        tensors: list = []
        _flatten(batch, tensors, [])
        # Static inputs live outside the graph's pool; the warm-up reads them, so the real batch trains.
        inputs = [t.detach().to(self.device, copy=True) for t in tensors]
        static_batch = _rebuild(batch, inputs)
        if self._stream is None:
            # One side stream for every warm-up and capture: each new stream gets its own cuBLAS workspace.
            self._stream = torch.cuda.Stream(self.device)
        side = self._stream
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            try:
                loss = self.step_fn(static_batch).detach()  # the real step for this batch
            except Exception as exc:  # noqa: BLE001 - e.g. a compiled block that fails to build here
                fallback, self.fallback = self.fallback, None
                if fallback is None or isinstance(exc, torch.cuda.OutOfMemoryError):
                    raise
                self._drop_grads()  # the failed step stopped before the optimizer: nothing else changed
                fallback(exc)
                loss = self.step_fn(static_batch).detach()
        torch.cuda.current_stream(self.device).wait_stream(side)
        loss = loss.clone()
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        host_calls: list = []
        rng = _rng_snapshot(self.device)
        originals = {name: getattr(self.step_fn, name) for name in self.host_attrs
                     if getattr(self.step_fn, name, None) is not None}
        try:
            for name, real in originals.items():
                setattr(self.step_fn, name, _HostCalls(real, host_calls))
            # One pool for every shape: each graph's intermediates die inside it, graphs never overlap.
            with torch.cuda.graph(graph, pool=self._pool, stream=side, capture_error_mode=CAPTURE_MODE):
                static_loss = self.step_fn(static_batch).detach()
        except Exception as exc:  # noqa: BLE001 - any failure to capture means "run this shape eagerly"
            _rng_restore(self.device, rng)
            self._drop_grads()  # the aborted capture may have left gradients that were never computed
            self.graphs[key] = None
            self.on_warning(f"fast path: could not capture the training step for batch shape "
                            f"{_shape_words(key)}; it runs eagerly ({type(exc).__name__}: {exc}).")
            return loss
        finally:
            for name, real in originals.items():
                setattr(self.step_fn, name, real)
        self.graphs[key] = _Graph(graph, inputs, static_loss, host_calls)
        self.capture_seconds[key] = time.perf_counter() - t0
        return loss


def _rng_snapshot(device):
    """A copy of the device's default generator state, taken before a capture."""
    try:
        gen = torch.cuda.default_generators[torch.device(device).index or 0]
        return gen, gen.clone_state()
    except Exception:  # noqa: BLE001 - older torch: nothing to restore
        return None


def _rng_restore(device, snapshot) -> None:
    """After a failed capture: give the generator a state that is not stuck in 'capturing'.

    A capture that raises can end without its epilogue, and every later random draw on the device then
    fails with "Offset increment outside graph capture encountered unexpectedly".
    """
    if snapshot is None:
        return
    gen, saved = snapshot
    try:
        gen.graphsafe_set_state(saved)
    except Exception:  # noqa: BLE001
        pass


def _shape_words(key) -> str:
    shapes = [tuple(s[1]) for s in key or () if s[0] == "T"]
    return ", ".join("x".join(map(str, s)) for s in shapes[:2]) or "?"


class GraphedForward:
    """A module's inference forward replayed from a CUDA graph per input shape (preview denoising).

    ``g = GraphedForward(pipe.unet).install()`` routes ``pipe.unet(...)`` through it; each new combination of
    input shapes and plain arguments is warmed up, captured once, then replayed. Weights written in place
    (fusing LoRAs with ``copy_``) are seen by the graph, so slider moves need no new capture. Anything that
    changes the modules or their Python-side settings (adding or removing adapters, enabling/disabling them,
    live adapter scales) must call ``reset()``. With gradients enabled, or off CUDA, it calls the forward as is.
    """

    def __init__(self, module, *, max_graphs: int = 8, warmup: int = 2):
        self.module = module
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._forward = module.forward
        self.graphs: dict[tuple, tuple | None] = {}
        self.replays = 0
        self.capture_seconds = 0.0
        self.last_error: str | None = None  # why the last shape could not be captured (it runs eagerly)
        self._pool = None
        self._stream = None

    def install(self) -> "GraphedForward":
        self.module.forward = self
        return self

    def uninstall(self) -> None:
        if self.module.__dict__.get("forward") is self:
            del self.module.forward
        self.reset()

    def reset(self) -> None:
        self.graphs.clear()

    def __call__(self, *args, **kwargs):
        if torch.is_grad_enabled() or not torch.cuda.is_available():
            return self._forward(*args, **kwargs)
        call = (args, kwargs)
        spec: list = []
        tensors: list = []
        _flatten(call, tensors, spec)
        if not tensors or any(not t.is_cuda for t in tensors if t.numel() > 1):
            return self._forward(*args, **kwargs)
        try:
            key = (tuple(spec), torch.is_inference_mode_enabled())
            hash(key)
        except TypeError:
            return self._forward(*args, **kwargs)
        entry = self.graphs.get(key, False)
        if entry is False:
            if len(self.graphs) >= self.max_graphs:
                self.graphs.clear()  # sizes changed: start over rather than grow without bound
            entry = self.graphs[key] = self._capture(call, tensors)
        if entry is None:
            return self._forward(*args, **kwargs)
        graph, inputs, out = entry
        for dst, src in zip(inputs, tensors):
            dst.copy_(src, non_blocking=True)
        graph.replay()
        self.replays += 1
        return _clone_out(out)

    def _capture(self, call, tensors):
        t0 = time.perf_counter()
        device = next(t.device for t in tensors if t.is_cuda)
        inputs = [t.to(device, copy=True) for t in tensors]
        args, kwargs = _rebuild(call, inputs)
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
            self._pool = torch.cuda.graph_pool_handle()
        side = self._stream
        side.wait_stream(torch.cuda.current_stream(device))
        rng = _rng_snapshot(device)
        try:
            with torch.cuda.stream(side):
                for i in range(self.warmup):
                    # The last warm-up refuses host syncs: a forward that syncs fails here, eagerly, rather
                    # than inside the capture (a failed capture can leave the CUDA RNG in capture state).
                    mode = torch.cuda.get_sync_debug_mode()
                    if i == self.warmup - 1:
                        torch.cuda.set_sync_debug_mode("error")
                    try:
                        self._forward(*args, **kwargs)
                    finally:
                        torch.cuda.set_sync_debug_mode(mode)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, stream=side, capture_error_mode=CAPTURE_MODE):
                out = self._forward(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - an uncapturable forward just runs eagerly
            self.last_error = f"{type(exc).__name__}: {exc}"
            _rng_restore(device, rng)
            torch.cuda.synchronize(device)
            return None
        self.capture_seconds += time.perf_counter() - t0
        return graph, inputs, out


def _clone_out(out):
    """Outputs live in the graph's memory and the next replay overwrites them: hand out copies."""
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, dict):  # diffusers' BaseOutput is an OrderedDict dataclass
        return type(out)(**{k: _clone_out(v) for k, v in out.items()})
    if isinstance(out, (list, tuple)):
        return type(out)(_clone_out(v) for v in out)
    return out
