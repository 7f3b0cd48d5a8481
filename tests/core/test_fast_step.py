"""The captured training step: declines cleanly off CUDA, matches the eager step, and the bench harness runs."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from lora_studio.config import TrainingConfig
from lora_studio.core.training.fast_step import (FastStep, _key, capturable_adamw, capturable_checkpointing,
                                                 fast_path_reason)

ROOT = Path(__file__).resolve().parents[2]
CUDA = torch.cuda.is_available()


def _tiny_unet_with_lora(seed=0, device="cpu"):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=8, norm_num_groups=8).to(device)
    unet.requires_grad_(False)
    # Non-zero B, so the adapter changes the output from the first step and gradients reach A too.
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_v"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    return unet, params


def _step_fn(unet, params, opt):
    sys.path.insert(0, str(ROOT))
    from bench.steps import alphas_cumprod, make_step

    device = next(unet.parameters()).device
    return make_step(unet, params, opt, acp=alphas_cumprod(device), autocast_cache=False,
                     amp_dtype=torch.bfloat16 if device.type == "cuda" else torch.bfloat16)


def _batches(n, batch=2, size=8, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        b = batch if i % 3 else batch + 1  # two shapes interleaved: one graph each
        out.append({
            "latents": torch.randn(b, 4, size, size, generator=g).to(device),
            "noise": torch.randn(b, 4, size, size, generator=g).to(device),
            "timesteps": torch.randint(0, 1000, (b,), generator=g).to(device),
            "encoder_hidden_states": torch.randn(b, 5, 16, generator=g).to(device),
        })
    return out


def test_reason_names_each_blocker():
    cfg = TrainingConfig()
    assert "CUDA" in fast_path_reason(cfg, "cpu")
    assert "off" in fast_path_reason(cfg.replace(fast_path=False), "cuda")
    if CUDA:
        assert fast_path_reason(cfg.replace(mixed_precision="bf16"), "cuda") is None
        assert "accumulation" in fast_path_reason(cfg.replace(gradient_accumulation_steps=2), "cuda")
        assert "prodigy" in fast_path_reason(cfg.replace(optimizer="prodigy"), "cuda")
        assert "dropout" in fast_path_reason(cfg.replace(lora_dropout=0.1, gradient_checkpointing=True), "cuda")
        assert "fp16" in fast_path_reason(cfg.replace(mixed_precision="fp16"), "cuda")


def test_batch_key_separates_shapes_and_values():
    a = {"x": torch.zeros(2, 3), "flag": 1}
    assert _key(a) == _key({"x": torch.ones(2, 3), "flag": 1})
    assert _key(a) != _key({"x": torch.zeros(3, 3), "flag": 1})
    assert _key(a) != _key({"x": torch.zeros(2, 3), "flag": 2})
    assert _key(a) != _key({"x": torch.zeros(2, 3, dtype=torch.float16), "flag": 1})


def test_declines_on_cpu_and_trains_exactly_like_eager():
    unet, params = _tiny_unet_with_lora()
    twin = copy.deepcopy(unet)
    twin_params = [p for p in twin.parameters() if p.requires_grad]
    opt = capturable_adamw(params, lr=1e-3, device="cpu")
    assert isinstance(opt.param_groups[0]["lr"], float)  # plain AdamW off CUDA
    warnings = []
    fast = FastStep(_step_fn(unet, params, opt), device="cpu", params=params, on_warning=warnings.append)
    assert not fast.active and "CUDA" in fast.reason
    eager = _step_fn(twin, twin_params, capturable_adamw(twin_params, lr=1e-3, device="cpu"))
    batches = _batches(4)
    before = [p.detach().clone() for p in params]
    losses_fast = [float(fast(b)) for b in batches]
    losses_eager = [float(eager(b)) for b in batches]
    assert losses_fast == losses_eager
    assert fast.eager_calls == 4 and fast.replays == 0 and not fast.graphs and not warnings
    assert any(not torch.equal(a, p) for a, p in zip(before, params)), "the step did not train"
    for p, q in zip(params, twin_params):
        assert torch.equal(p, q)


def test_bench_harness_smoke(tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench import train_step

    rc = train_step.main(["--tiny", "--device", "cpu", "--models", "sd15", "--batches", "1",
                          "--checkpointing", "off", "--budget", "0.05", "--out", str(tmp_path)])
    assert rc == 0
    import json

    result = json.loads(next(tmp_path.glob("train_step_tiny_*.json")).read_text())
    rows = {r["path"]: r for r in result["rows"]}
    assert set(rows) == {"reference", "fast"}
    assert rows["fast"]["fast_active"] is False and "CUDA" in rows["fast"]["fallback_reason"]
    assert all(r["ms"] > 0 and r["loss"] == r["loss"] for r in rows.values())
    assert result["setup"]["sd15"]["flops_per_image"] > 0
    assert "| sd15 | fast | 1 |" in next(tmp_path.glob("train_step_tiny_*.md")).read_text()


# ------------------------------------------------------------------------------------------ on a GPU
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_captured_step_matches_eager_on_gpu(checkpointing):
    unet, params = _tiny_unet_with_lora(device="cuda")
    twin = copy.deepcopy(unet)
    twin_params = [p for p in twin.parameters() if p.requires_grad]
    if checkpointing:
        capturable_checkpointing(unet)
        twin.enable_gradient_checkpointing()
    class Step:  # like the engine's TrainingStep: the LR scheduler steps inside the step
        def __init__(self, unet, params):
            opt = capturable_adamw(params, lr=1e-3)
            self.inner = _step_fn(unet, params, opt)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))

        def __call__(self, batch):
            loss = self.inner(batch)
            self.lr_scheduler.step()
            return loss

    warnings = []
    step = Step(unet, params)
    fast = FastStep(step, device="cuda", params=params, on_warning=warnings.append)
    eager = Step(twin, twin_params)
    batches = _batches(12, device="cuda")
    lf, le = [], []
    for b in batches:
        lf.append(fast({**b, "micro_step": len(lf)}))  # bookkeeping keys are dropped, not baked
        le.append(eager(b))
    lf = torch.stack(lf).float().cpu()
    le = torch.stack(le).float().cpu()
    assert not warnings, warnings
    assert fast.replays == 10 and len(fast.graphs) == 2
    # The schedule went on during replays (it would stick at the captured value inside the graph).
    assert step.lr_scheduler.last_epoch == eager.lr_scheduler.last_epoch == 12
    assert abs(float(step.lr_scheduler.optimizer.param_groups[0]["lr"]) - 1e-3 / 13) < 1e-9
    assert torch.allclose(lf, le, rtol=1e-3, atol=1e-6), (lf, le)
    for p, q in zip(params, twin_params):
        assert torch.allclose(p, q, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_uncapturable_step_falls_back_to_eager_on_gpu():
    unet, params = _tiny_unet_with_lora(device="cuda")
    opt = capturable_adamw(params, lr=1e-3)
    inner = _step_fn(unet, params, opt)

    def step(batch):  # a host sync inside the step cannot be captured
        loss = inner(batch)
        float(loss)
        return loss

    warnings = []
    fast = FastStep(step, device="cuda", params=params, on_warning=warnings.append)
    losses = [float(fast(b)) for b in _batches(4, device="cuda")]
    assert all(v == v for v in losses)
    assert warnings and "eagerly" in warnings[0]
    assert fast.replays == 0 and all(v is None for v in fast.graphs.values())


def test_host_calls_are_recorded_not_run_and_bookkeeping_keys_dropped():
    from lora_studio.core.training.fast_step import _HostCalls

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    calls = []
    proxy = _HostCalls(sched, calls)
    proxy.step()
    assert sched.last_epoch == 0 and proxy.last_epoch == 0  # recorded, not run; plain attributes pass through
    obj, name, args, kwargs = calls[0]
    getattr(obj, name)(*args, **kwargs)
    assert sched.last_epoch == 1 and opt.param_groups[0]["lr"] == 0.5

    seen = []
    fast = FastStep(lambda b: seen.append(sorted(b)) or torch.zeros(()), device="cpu")
    fast({"x": torch.ones(1), "micro_step": 3})
    assert seen == [["x"]]


def test_graphed_forward_installs_and_passes_through_off_cuda():
    from lora_studio.core.training.fast_step import GraphedForward

    unet, _ = _tiny_unet_with_lora()
    x, t, ehs = torch.randn(2, 4, 8, 8), torch.tensor(10), torch.randn(2, 5, 16)
    with torch.no_grad():
        want = unet(x, t, ehs).sample
        g = GraphedForward(unet).install()
        assert unet.forward is g
        got = unet(x, t, ehs).sample
        g.uninstall()
    assert torch.equal(want, got) and g.replays == 0 and not g.graphs
    assert "forward" not in unet.__dict__


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_graphed_forward_sees_in_place_weight_changes_on_gpu():
    from lora_studio.core.training.fast_step import GraphedForward

    unet, _ = _tiny_unet_with_lora(device="cuda")
    g = GraphedForward(unet).install()
    layer = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.base_layer
    outs = []
    with torch.inference_mode():
        for i, size in enumerate((8, 8, 8, 16)):
            if i == 2:
                layer.weight.mul_(1.5)  # a slider move: fused weights rewritten in place
            x = torch.randn(2, 4, size, size, device="cuda")
            t = torch.tensor(500.0, device="cuda")
            ehs = torch.randn(2, 5, 16, device="cuda")
            got = unet(x, t, ehs, return_dict=False)[0]
            assert g.last_error is None, g.last_error
            want = g._forward(x, t, ehs, return_dict=False)[0]  # the original forward, eagerly
            outs.append((got, want))
    # 8x8 captured once (and replayed at once), replayed twice more; 16x16 captured and replayed.
    assert g.replays == 4 and len(g.graphs) == 2 and all(v is not None for v in g.graphs.values())
    for got, want in outs:
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    g.uninstall()


def test_capturable_adamw_keeps_a_float_base_rate_for_schedulers():
    opt = capturable_adamw([torch.nn.Parameter(torch.zeros(2))], lr=0.5, device="cpu")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1)
    assert sched.base_lrs == [0.5]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_resumed_optimizer_lr_moves_back_to_gpu_before_capture():
    unet, params = _tiny_unet_with_lora(device="cuda")
    opt = capturable_adamw(params, lr=1e-3)
    state = opt.state_dict()
    state["param_groups"][0]["lr"] = state["param_groups"][0]["lr"].cpu()  # as torch.load(map_location="cpu")
    opt.load_state_dict(state)
    assert opt.param_groups[0]["lr"].device.type == "cpu"
    warnings = []
    fast = FastStep(_step_fn(unet, params, opt), device="cuda", params=params, optimizer=opt,
                    on_warning=warnings.append)
    for b in _batches(3, device="cuda"):
        fast(b)
    assert not warnings and fast.replays >= 1 and opt.param_groups[0]["lr"].is_cuda


# ------------------------------------------------------------------------------ kernel-level speed-ups
def _fwd_bwd(unet, params, batch):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = unet(batch["latents"], batch["timesteps"], batch["encoder_hidden_states"]).sample
    out.float().pow(2).mean().backward()
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out.detach().float(), grads


def test_fast_lora_forward_matches_peft_and_uninstalls():
    from lora_studio.core.training.fast_step import install_fast_lora, uninstall_fast_lora

    unet, params = _tiny_unet_with_lora()
    for p in params:
        p.data = p.data.float()
    for m in unet.modules():  # scaling != 1, so folding the scale into B is exercised
        if hasattr(m, "scaling"):
            m.scaling["default"] = 0.5
    batch = _batches(1)[0]
    ref_out, ref_grads = _fwd_bwd(unet, params, batch)
    n = install_fast_lora(unet)
    assert n == sum(1 for m in unet.modules() if type(m).__name__ == "Linear" and hasattr(m, "lora_A"))
    assert n > 0
    out, grads = _fwd_bwd(unet, params, batch)
    # bf16 arithmetic in a different order (one rounding instead of three): close, not equal
    assert torch.allclose(out, ref_out, atol=3e-2, rtol=3e-2)
    for g, r in zip(grads, ref_grads):
        assert (g - r).norm() <= 5e-2 * r.norm() + 1e-8
    # Without autocast the layer runs peft's own forward: bit-identical to peft.
    x = torch.randn(3, 32)
    lin = next(m for m in unet.modules() if hasattr(m, "_fast_lora_name"))
    assert torch.equal(lin(x), type(lin).forward(lin, x))
    assert uninstall_fast_lora(unet) == n
    back, _ = _fwd_bwd(unet, params, batch)
    assert torch.equal(back, ref_out)


def test_fast_lora_skips_dropout_and_disabled_adapters():
    from peft import LoraConfig

    from lora_studio.core.training.fast_step import install_fast_lora

    unet, _ = _tiny_unet_with_lora()
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, lora_dropout=0.1, target_modules=["to_k"]), adapter_name="drop")
    unet.set_adapters(["drop"])
    assert install_fast_lora(unet) == 0  # the active adapter has dropout: peft's forward stays


def test_sdpa_context_names_backends():
    from lora_studio.core.training.fast_step import sdpa_context

    with sdpa_context(None), sdpa_context("auto"), sdpa_context("math"):
        q = torch.randn(1, 2, 4, 8)
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    with pytest.raises(ValueError, match="unknown attention backend"):
        sdpa_context("fastest")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_fast_kernels_step_stays_close_to_the_autocast_step_on_gpu():
    from lora_studio.core.training.fast_step import install_fast_lora

    sys.path.insert(0, str(ROOT))
    from bench.steps import alphas_cumprod, make_step

    unet, params = _tiny_unet_with_lora(device="cuda")
    unet.to(torch.bfloat16)
    for p in params:
        p.data = p.data.float()
    twin = copy.deepcopy(unet)
    twin_params = [p for p in twin.parameters() if p.requires_grad]
    acp = alphas_cumprod("cuda")
    eager = make_step(unet, params, capturable_adamw(params, lr=1e-3), acp=acp, autocast_cache=False)
    assert install_fast_lora(twin) > 0
    fast = FastStep(make_step(twin, twin_params, capturable_adamw(twin_params, lr=1e-3), acp=acp,
                              autocast_cache=False, autocast=False), device="cuda", params=twin_params)
    batches = _batches(8, device="cuda")
    a = torch.stack([eager(b) for b in batches]).float()
    f = torch.stack([fast(b) for b in batches]).float()
    assert fast.replays > 0
    assert torch.allclose(a, f, rtol=2e-2, atol=1e-3), (a, f)
    for p, q in zip(params, twin_params):
        assert (p - q).norm() <= 2e-2 * p.norm() + 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_failed_first_step_runs_the_fallback_then_captures_on_gpu():
    w = torch.zeros(4, device="cuda", requires_grad=True)
    opt = capturable_adamw([w], lr=0.1)
    state = {"broken": True}
    undone = []

    def step(batch):
        if state["broken"]:
            (w * batch["x"]).sum().backward()  # a gradient that must not survive into the retry
            raise RuntimeError("compiled block failed to build")
        loss = (w * batch["x"]).sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def fallback(exc):
        undone.append(str(exc))
        state["broken"] = False

    fs_step = FastStep(step, device="cuda", params=[w], fallback=fallback)
    x = torch.ones(4, device="cuda")
    for _ in range(3):
        fs_step({"x": x})
    assert undone == ["compiled block failed to build"] and fs_step.replays == 2
    # three real updates of AdamW (lr 0.1, sign of a constant gradient): w went down by ~0.3 each
    assert torch.allclose(w.detach(), torch.full((4,), -0.3, device="cuda"), atol=0.02)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_failed_graphed_capture_leaves_random_draws_working_on_gpu():
    from lora_studio.core.training.fast_step import GraphedForward

    class Syncs(torch.nn.Module):
        def forward(self, x):
            y = x * 2
            torch.cuda.synchronize()  # not allowed while a graph is being captured
            return y

    m = Syncs()
    g = GraphedForward(m).install()
    with torch.inference_mode():
        x = torch.randn(4, device="cuda")
        assert torch.equal(m(x), x * 2)  # capture failed: the forward ran eagerly
        assert g.last_error is not None and g.graphs and all(v is None for v in g.graphs.values())
        torch.randn(4, device="cuda")  # the default generator is not left in capture state
        torch.cuda.manual_seed(1)
    g.uninstall()


def test_prepare_fast_kernels_sets_the_step_up_and_its_fallback_undoes_compilation():
    from lora_studio.core.training.fast_step import prepare_fast_kernels

    class Step:
        autocast = True
        sdpa_backend = None

    unet, _ = _tiny_unet_with_lora()
    step, warnings = Step(), []
    benchmark = torch.backends.cudnn.benchmark
    fallback = prepare_fast_kernels(unet, step, weight_dtype=torch.bfloat16, compile_blocks_=True, sdpa="cudnn",
                                    on_warning=warnings.append)
    assert step.autocast is False and step.sdpa_backend == "cudnn"
    assert torch.backends.cudnn.benchmark == benchmark  # no process-wide change
    assert any("_fast_lora_name" in m.__dict__ for m in unet.modules())
    compiled = [m for m in unet.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert compiled and all(type(m).__name__ == "BasicTransformerBlock" for m in compiled)
    fallback(RuntimeError("inductor could not build"))
    assert not any(getattr(m, "_compiled_call_impl", None) is not None for m in unet.modules())
    assert len(warnings) == 1 and "inductor could not build" in warnings[0]
    with pytest.raises(RuntimeError, match="again"):  # nothing left to undo: the error is the step's own
        fallback(RuntimeError("again"))
    # fp32 weights (no mixed precision) keep autocast's path: there is nothing to gain without it
    step32 = Step()
    prepare_fast_kernels(unet, step32, weight_dtype=torch.float32)
    assert step32.autocast is True


def test_conv_lora_targets_keep_autocast():
    from peft import LoraConfig

    from lora_studio.core.training.fast_step import prepare_fast_kernels

    class Step:
        autocast = True

    unet, _ = _tiny_unet_with_lora()
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "conv1"]), adapter_name="conv")
    unet.delete_adapters("default")  # only the conv+attention adapter is left
    assert any(type(m).__name__ == "Conv2d" and hasattr(m, "lora_A") for m in unet.modules())
    step = Step()
    prepare_fast_kernels(unet, step, weight_dtype=torch.bfloat16)
    # peft's conv LoRA would run in fp32 without autocast: the step keeps autocast
    assert step.autocast is True
