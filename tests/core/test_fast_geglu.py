"""The fused GEGLU (fast_geglu's Triton kernels) against diffusers' eager GEGLU. Runs on a CUDA GPU, or on the
CPU through Triton's interpreter where Triton is installed (torch's CPU build does not ship it: skipped)."""

from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before Triton is imported
pytest.importorskip("triton")

from lora_testkit import rel  # noqa: E402

from lora_studio.core.accel.fast_geglu import geglu, reference  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"


# widths that are not multiples of the kernel's 1024-element block, a 2-D input, and one row
@pytest.mark.parametrize("shape", [(2, 7, 2 * 37), (3, 2 * 320), (1, 1, 2 * 5), (2, 33, 2 * 160)])
def test_fused_geglu_matches_eager(shape):
    g = torch.Generator().manual_seed(0)
    h32 = (torch.randn(shape, generator=g) * 2).to(DEVICE)  # gates well into GELU's curved part
    dy32 = torch.randn(*shape[:-1], shape[-1] // 2, generator=g).to(DEVICE)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 8e-3), (torch.float16, 1e-3)):
        # the reference in float32 on the same rounded inputs: what is left is the output's one rounding
        ref_h = h32.to(dtype).float().requires_grad_(True)
        ref = reference(ref_h)
        (ref_dh,) = torch.autograd.grad(ref, ref_h, dy32.to(dtype).float())
        h = h32.to(dtype).requires_grad_(True)
        y = geglu(h)
        (dh,) = torch.autograd.grad(y, h, dy32.to(dtype))
        assert y.dtype == dh.dtype == dtype and y.shape == ref.shape and dh.shape == h.shape
        assert rel(y, ref) <= tol and rel(dh, ref_dh) <= tol, (dtype, rel(y, ref), rel(dh, ref_dh))


def test_a_strided_incoming_gradient_is_read_right():
    # the next layer may hand back a non-contiguous gradient (e.g. a transposed view)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 6, 2 * 12, generator=g).to(DEVICE).requires_grad_(True)
    dy = torch.randn(2, 12, 6, generator=g).to(DEVICE).transpose(1, 2)
    (want,) = torch.autograd.grad(reference(h), h, dy)
    (got,) = torch.autograd.grad(geglu(h), h, dy)
    assert rel(got, want) < 1e-5


def test_install_covers_every_geglu_and_a_cpu_unet_keeps_its_arithmetic():
    from lora_testkit import tiny_unet_with_lora

    from lora_studio.core.accel.fast_geglu import install_fast_geglu, installed, uninstall_fast_geglu

    unet, params = tiny_unet_with_lora(seed=3)
    x, t, ehs = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 5, 16)
    want = unet(x, t, ehs).sample
    n = install_fast_geglu(unet)  # (Triton's interpreter passes the self-check on the CPU)
    assert n == sum(type(m).__name__ == "GEGLU" for m in unet.modules()) > 0 and installed(unet) == n
    assert install_fast_geglu(unet) == 0  # never twice
    assert torch.equal(unet(x, t, ehs).sample, want)  # CPU tensors: diffusers' own forward
    assert uninstall_fast_geglu(unet) == n and installed(unet) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (the module path is for CUDA tensors only)")
def test_installed_geglu_trains_a_unet_like_eager(monkeypatch):
    from lora_testkit import output_and_grads, tiny_unet_with_lora

    from lora_studio.core.accel.fast_geglu import install_fast_geglu, uninstall_fast_geglu

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    # a LoRA on the GEGLU's own projection too: the fused part runs after whatever the projection is
    unet, params = tiny_unet_with_lora(seed=2, device="cuda", channels=(32, 64),
                                       targets=("to_q", "to_v", "ff.net.0.proj"))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 8, 8, generator=g).cuda()
    ehs, t = torch.randn(2, 5, 16, generator=g).cuda(), torch.tensor([10, 500], device="cuda")

    want = output_and_grads(unet, params, x, t, ehs)
    n = install_fast_geglu(unet)
    assert n > 0
    got = output_and_grads(unet, params, x, t, ehs)
    errors = [rel(got[0], want[0])] + [rel(a, b) for a, b in zip(got[1], want[1])]
    assert max(errors) < 1e-5, errors
    assert uninstall_fast_geglu(unet) == n
