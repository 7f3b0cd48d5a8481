"""The Triton kernel modules' self-checks (fast_kernels.triton_self_check): each passes on this machine's device
(a GPU, or the CPU through Triton's interpreter) without touching a run's random streams; a check that raises
or disagrees leaves the eager path on."""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from lora_studio.core.accel.fast_kernels import triton_available, triton_self_check

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before Triton is imported
DEVICE = "cuda" if CUDA else "cpu"


@pytest.mark.parametrize("name", ["fast_norm", "fast_geglu", "fast_layernorm"])
def test_each_self_check_passes_and_leaves_the_random_stream_alone(name):
    pytest.importorskip("triton")
    module = importlib.import_module(f"lora_studio.core.accel.{name}")
    module._self_check.cache_clear()
    cpu, cuda = torch.random.get_rng_state(), (torch.cuda.get_rng_state() if CUDA else None)
    assert module.available(DEVICE)
    assert torch.equal(cpu, torch.random.get_rng_state())
    assert not CUDA or torch.equal(cuda, torch.cuda.get_rng_state())


def test_a_failing_or_raising_check_or_missing_kernels_mean_not_available():
    calls = []

    def wrong(device, dtype, tol):
        calls.append((device, dtype, tol))
        return False

    def broken(device, dtype, tol):
        raise RuntimeError("ptxas could not build the kernel")

    check = triton_self_check(wrong, fp32_tol=1e-3)
    assert not triton_available(lambda: None, check, "cpu")
    assert not triton_available(lambda: None, check, "cpu")
    assert calls == [("cpu", torch.float32, 1e-3)]  # once per device, in the CPU's dtype and tolerance
    assert not triton_available(lambda: None, triton_self_check(broken), "cpu")

    def no_triton():
        raise ImportError("No module named 'triton'")

    assert not triton_available(no_triton, triton_self_check(lambda *a: True), "cpu")
    assert triton_available(lambda: None, triton_self_check(lambda *a: True), "cpu")
