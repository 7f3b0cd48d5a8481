"""Transformer blocks with their residual adds inside the LayerNorm kernels (fast_block) train like diffusers' own.
Runs on a CUDA GPU, or on the CPU through Triton's interpreter where Triton is installed (skipped otherwise)."""

from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before Triton is imported
pytest.importorskip("triton")

from lora_testkit import output_and_grads, rel, tiny_unet_with_lora  # noqa: E402

from lora_studio.core.accel import fast_block, fast_layernorm  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"


@pytest.fixture
def kernels_on_this_device(monkeypatch):
    """On the CPU the kernels run in Triton's interpreter: the module paths (CUDA only) take CPU tensors too.
    On the GPU: fp32 products without TF32, which would round differently on the two paths' slightly different
    inputs and blur the comparison."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    if not CUDA:
        monkeypatch.setattr(fast_layernorm, "covered", lambda norm, x: (
            x.is_contiguous() and x.dtype == norm.weight.dtype and not norm.weight.requires_grad))


def _unet():
    # linear projections (SDXL's; SD 1.5's 1x1 convolutions hand the blocks a transposed view, which the engine's
    # fast_proj / channels-last maps turn into contiguous tokens: the blocks' input there is contiguous too)
    unet, params = tiny_unet_with_lora(seed=5, device=DEVICE, channels=(32, 64), use_linear_projection=True,
                                       targets=("to_q", "to_k", "to_v", "to_out.0"))
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, 8, 8, generator=g).to(DEVICE)
    ehs, t = torch.randn(2, 5, 16, generator=g).to(DEVICE), torch.tensor([10, 500], device=DEVICE)
    return unet, params, (x, t, ehs)


def test_fused_blocks_give_the_same_output_and_lora_gradients(kernels_on_this_device):
    unet, params, inputs = _unet()
    want = output_and_grads(unet, params, *inputs)
    blocks = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert fast_layernorm.install_fast_layernorm(unet) == 3 * len(blocks) > 0
    assert fast_block.install_fast_block(unet) == len(blocks) == fast_block.installed(unet)
    calls = []
    real = fast_layernorm.add_layer_norm
    fast_block.fln.add_layer_norm = lambda *a: calls.append(1) or real(*a)
    try:
        got = output_and_grads(unet, params, *inputs)
    finally:
        fast_block.fln.add_layer_norm = real
    assert len(calls) == 2 * len(blocks)  # norm2 and norm3 of every block took the fused kernel
    errors = [rel(got[0], want[0])] + [rel(a, b) for a, b in zip(got[1], want[1])]
    assert max(errors) < 1e-4, errors
    assert fast_block.uninstall_fast_block(unet) == len(blocks)
    assert fast_layernorm.uninstall_fast_layernorm(unet) == 3 * len(blocks)
    assert not any("forward" in m.__dict__ for m in unet.modules())


def test_a_block_call_it_does_not_cover_runs_diffusers_forward(kernels_on_this_device):
    unet, params, inputs = _unet()
    fast_layernorm.install_fast_layernorm(unet)
    fast_block.install_fast_block(unet)
    block = next(m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock")
    h = torch.randn(2, 16, block.norm1.normalized_shape[0], device=DEVICE)
    ehs = inputs[2]
    calls = []
    real = fast_layernorm.add_layer_norm
    fast_block.fln.add_layer_norm = lambda *a: calls.append(1) or real(*a)
    try:
        with torch.no_grad():
            out = block(h, encoder_hidden_states=ehs, cross_attention_kwargs={"scale": 1.0})
            eager = type(block).forward(block, h, encoder_hidden_states=ehs, cross_attention_kwargs={"scale": 1.0})
    finally:
        fast_block.fln.add_layer_norm = real
    assert not calls and torch.equal(out, eager)


def test_blocks_with_trainable_norms_are_left_alone():
    unet, _, _ = _unet()
    block = next(m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock")
    block.norm2.weight.requires_grad_(True)
    n = sum(type(m).__name__ == "BasicTransformerBlock" for m in unet.modules())
    assert fast_block.install_fast_block(unet) == n - 1
    assert "forward" not in block.__dict__
