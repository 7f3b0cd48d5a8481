"""Which kernel path a machine gets: the Triton kernels (fast_norm, fast_geglu, fast_layernorm and fast_block,
which builds on fast_layernorm) or the eager code they fall back to.

``triton_reason(device)`` asks the same questions the kernel modules ask before installing themselves (can
``import triton`` run, does each module's self-check pass on `device`), so what it reports is what a run does.
``kernel_path(device)`` is the one sentence for people: the installer prints it after installing
(``python -m lora_studio.core.accel.triton_check``) and `Accel.stats` records it with a run's result.

Without Triton the step is slower by a measured factor: ``NO_TRITON_SLOWDOWN`` holds it once measured
(bench/NOTES.md, the e2e no-Triton row); until then the sentence gives no number.
"""

from __future__ import annotations

import torch

# How many times slower a training step is without the Triton kernels, in the real `lora-studio train` on one GPU
# (SDXL at 1024, batch 1: 82.2 ms against 69.5 ms, bench/e2e.py with and without bench/no_triton on the path;
# figures and commands in bench/NOTES.md). None would mean not measured: the sentence then gives no number.
NO_TRITON_SLOWDOWN: float | None = 1.2

FAST = "fast kernels (Triton)"


def _kernel_modules():
    from lora_studio.core.accel import fast_geglu, fast_layernorm, fast_norm

    return {"fast_norm": fast_norm, "fast_geglu": fast_geglu, "fast_layernorm": fast_layernorm}


def triton_reason(device) -> str | None:
    """Why the Triton kernels cannot run on `device`, in a few plain words (None: they can). Never raises."""
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a Triton whose own import breaks (a DLL on Windows)
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return f"no Triton ({detail})"
    device = torch.device(device)
    failed = [name for name, module in _kernel_modules().items() if not module.available(device)]
    if not failed:
        return None
    if device.type != "cuda":
        return f"the Triton kernels run on a CUDA GPU (this run is on the {device.type})"
    return f"the Triton kernels failed their self-check on this GPU ({', '.join(failed)})"


def kernel_path(device) -> str:
    """"fast kernels (Triton)", or "without Triton kernels: <reason>, expect ... slower steps" (on a GPU)."""
    reason = triton_reason(device)
    if reason is None:
        return FAST
    if torch.device(device).type != "cuda":  # the slowdown is a GPU figure; a CPU run is slow anyway
        return f"without Triton kernels: {reason}"
    if NO_TRITON_SLOWDOWN:
        return f"without Triton kernels: {reason}, expect about {NO_TRITON_SLOWDOWN:g}x slower steps"
    return f"without Triton kernels: {reason}, expect slower steps"


def main() -> int:
    """The installer's last check: the kernel path of the device a run would train on. Always exits 0 (a
    machine without the kernels still trains)."""
    from lora_studio.core.system import training_device

    try:
        print(f"training kernels: {kernel_path(training_device())}")
    except Exception as exc:  # noqa: BLE001 - the check must not fail an install; say what happened instead
        print(f"training kernels: could not be checked ({type(exc).__name__}: {exc})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
