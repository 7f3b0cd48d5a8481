"""GroupNorm on channels-last feature maps without layout copies.

cuDNN runs a UNet's bf16 convolutions in NHWC. On NCHW activations it transposes every input and output
(hundreds of transposes a step, bench/NOTES.md). Channels-last activations would remove them,
but ATen's CUDA GroupNorm only works on NCHW and copies a channels-last input to NCHW and back, which made
the channels-last step slower than the NCHW one. These Triton kernels normalise the (batch, pixels,
channels) memory as it lies: per tile of pixels x channels a partial mean and sum of squared deviations,
combined per (sample, group) with Chan's formula (as stable as Welford), then one pass that normalises
and applies the affine weight. The backward is the same shape: partial sums of dy and dy * x_hat, one
combine, one pass for dx. The frozen weight and bias get no gradient (LoRA never trains them).

`install_nhwc_group_norm` gives a module's GroupNorms this path for channels-last CUDA inputs whose affine
parameters are frozen; anything else runs ATen's GroupNorm. It also gives each plain ResnetBlock2D a forward
that applies the SiLU after each of its norms inside the same kernels (a pass over the map saved forward and
backward, and the norm's output no longer kept) and keeps its shortcut channels-last, and adds its frozen
convolutions' biases and the time embedding inside the norm and residual kernels instead of in passes of
their own. Needs Triton (shipped with torch's CUDA builds on Linux).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from lora_studio.core.accel.fast_kernels import (count_patched, install_forward, triton_available,
                                                     triton_self_check, unpatch)

BLOCK_P = 64  # pixels per tile
BLOCK_C = 64  # channels per tile
# warps per program: the best of the settings bench/kernel_tiles.py sweeps (larger tiles were slower)
WARPS = 8


def available(device: torch.device | str) -> bool:
    """Triton is there, and the kernels compile and agree with ATen's GroupNorm on `device` (checked once)."""
    return triton_available(_kernels, _self_check, device)


def _check(device: str, dtype: torch.dtype, tol: float) -> bool:
    """One small channels-last GroupNorm, forward and backward, with and without SiLU, against ATen's."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 8, 8, generator=g).to(device, dtype)
    w, b = torch.randn(64, generator=g).to(device, dtype), torch.randn(64, generator=g).to(device, dtype)
    dy = torch.randn(x.shape, generator=g).to(device, dtype)
    ok = True
    for silu in (False, True):
        xr = x.float().requires_grad_(True)
        ref = F.group_norm(xr, 8, w.float(), b.float(), 1e-6)
        ref = F.silu(ref) if silu else ref
        (ref_dx,) = torch.autograd.grad(ref, xr, dy.float())
        xc = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        y = group_norm_nhwc(xc, 8, w, b, 1e-6, silu=silu)
        (dx,) = torch.autograd.grad(y, xc, dy.contiguous(memory_format=torch.channels_last))
        ok = ok and torch.allclose(y.float(), ref, atol=tol, rtol=tol) and torch.allclose(dx.float(), ref_dx,
                                                                                          atol=tol, rtol=tol)
    return ok


_self_check = triton_self_check(_check, fp32_tol=1e-3)


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    # Sizes and the GRAD / SILU switches stay runtime values, so one compiled kernel serves forward and
    # backward, with and without SiLU, at every size: a fresh install compiles each kernel once per dtype
    # (the combine once per group width) instead of per variant. Triton's default specialises on integer
    # arguments (divisible by 16, equal to 1): with that and constexpr switches a fresh install's first step
    # took tens of seconds instead of under one (the variants are cached on disk afterwards).
    # (NBLK, the combine's loop count, stays a constant: Triton's interpreter, which the CPU tests use, cannot
    # loop over a runtime count; it takes one to three values in SD 1.5 and SDXL.)
    return (triton, _tile_moments_kernel(triton, tl), _group_combine_kernel(triton, tl), *_apply_kernels(triton, tl))


_SIZES = ["P", "C", "NP", "G", "CG", "GRAD", "SILU", "SHIFT"]  # runtime (unspecialised) kernel arguments


def _tile_moments_kernel(triton, tl):
    @triton.jit(do_not_specialize=_SIZES)
    def tile_moments(X, S, DY, MEAN, RSTD, W, B_, OUT1, OUT2, P, C, NP, G, CG, GRAD, SILU, SHIFT,
                     BP: tl.constexpr, BC: tl.constexpr):
        # forward (GRAD False): per channel of the tile, mean and sum of squared deviations of x;
        # backward: per channel, sum of dy and of dy * x_hat. OUT1/OUT2 are (B, NP, C) float32.
        # SILU: the output was silu(norm(x)); dy is turned into the norm's output gradient first.
        # SHIFT: the input is x + S[b, c] (a (B, C) float32 shift: a conv bias plus the time embedding).
        pid = tl.program_id(0)
        b = (pid // NP).to(tl.int64)
        pb = pid % NP
        rows = pb * BP + tl.arange(0, BP)
        cols = tl.program_id(1) * BC + tl.arange(0, BC)
        cmask = cols < C
        mask = (rows < P)[:, None] & cmask[None, :]
        offs = b * P * C + rows[:, None] * C + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        if SHIFT:
            x = tl.where(mask, x + tl.load(S + b * C + cols, mask=cmask, other=0.0)[None, :], 0.0)
        if GRAD:
            g = cols // CG
            mean = tl.load(MEAN + b * G + g, mask=cmask, other=0.0)
            rstd = tl.load(RSTD + b * G + g, mask=cmask, other=0.0)
            dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
            xhat = tl.where(mask, (x - mean[None, :]) * rstd[None, :], 0.0)
            if SILU:
                w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
                bias = tl.load(B_ + cols, mask=cmask, other=0.0).to(tl.float32)
                z = xhat * w[None, :] + bias[None, :]  # silu'(z) = s * (1 + z * (1 - s)), s = sigmoid(z)
                sg = tl.sigmoid(z)
                dy = dy * sg * (1.0 + z * (1.0 - sg))
            s1 = tl.sum(dy, axis=0)
            s2 = tl.sum(dy * xhat, axis=0)
        else:
            n = tl.minimum(P - pb * BP, BP).to(tl.float32)
            s1 = tl.sum(x, axis=0) / n
            d = tl.where(mask, x - s1[None, :], 0.0)
            s2 = tl.sum(d * d, axis=0)
        out = b * NP * C + pb * C + cols
        tl.store(OUT1 + out, s1, mask=cmask)
        tl.store(OUT2 + out, s2, mask=cmask)

    return tile_moments


def _group_combine_kernel(triton, tl):
    @triton.jit(do_not_specialize=_SIZES)
    def group_combine(IN1, IN2, W, OUT1, OUT2, P, C, NP, G, CG, eps, GRAD, BP: tl.constexpr,
                      BN: tl.constexpr, BG: tl.constexpr, NBLK: tl.constexpr):
        # one program per (sample, group). Forward: Chan's combination of the tiles' means / squared
        # deviations -> mean, 1/std. Backward: sums of w * (sum dy), w * (sum dy * x_hat) over the group / N.
        pid = tl.program_id(0)
        b = (pid // G).to(tl.int64)
        g = pid % G
        j = tl.arange(0, BG)
        jmask = j < CG
        total = (P * CG).to(tl.float32)
        acc1 = tl.zeros((BN, BG), tl.float32)
        acc2 = tl.zeros((BN, BG), tl.float32)
        if GRAD:
            w = tl.load(W + g * CG + j, mask=jmask, other=0.0).to(tl.float32)
            for k in range(NBLK):
                i = k * BN + tl.arange(0, BN)
                mask = (i < NP)[:, None] & jmask[None, :]
                offs = b * NP * C + i[:, None] * C + g * CG + j[None, :]
                acc1 += tl.load(IN1 + offs, mask=mask, other=0.0) * w[None, :]
                acc2 += tl.load(IN2 + offs, mask=mask, other=0.0) * w[None, :]
            tl.store(OUT1 + pid, tl.sum(tl.sum(acc1, 1), 0) / total)
            tl.store(OUT2 + pid, tl.sum(tl.sum(acc2, 1), 0) / total)
        else:
            for k in range(NBLK):  # the group's mean: tiles weighted by their pixel counts
                i = k * BN + tl.arange(0, BN)
                mask = (i < NP)[:, None] & jmask[None, :]
                n = tl.minimum(P - i * BP, BP).to(tl.float32)
                m = tl.load(IN1 + b * NP * C + i[:, None] * C + g * CG + j[None, :], mask=mask, other=0.0)
                acc1 += tl.where(mask, m * n[:, None], 0.0)
            mean = tl.sum(tl.sum(acc1, 1), 0) / total
            for k in range(NBLK):  # squared deviations: within tiles + tiles' means from the mean
                i = k * BN + tl.arange(0, BN)
                mask = (i < NP)[:, None] & jmask[None, :]
                n = tl.minimum(P - i * BP, BP).to(tl.float32)
                offs = b * NP * C + i[:, None] * C + g * CG + j[None, :]
                m = tl.load(IN1 + offs, mask=mask, other=0.0)
                m2 = tl.load(IN2 + offs, mask=mask, other=0.0)
                d = m - mean
                acc2 += tl.where(mask, m2 + n[:, None] * d * d, 0.0)
            var = tl.sum(tl.sum(acc2, 1), 0) / total
            tl.store(OUT1 + pid, mean)
            tl.store(OUT2 + pid, 1.0 / tl.sqrt(var + eps))

    return group_combine


def _apply_kernels(triton, tl):
    @triton.jit(do_not_specialize=_SIZES)
    def apply(X, S, DY, Y, W, B_, MEAN, RSTD, C1, C2, P, C, NP, G, CG, GRAD, SILU, SHIFT,
              BP: tl.constexpr, BC: tl.constexpr):
        # forward: y = x_hat * w + b (SILU: silu of it); backward: dx = rstd * (w * dy - c1 - x_hat * c2).
        pid = tl.program_id(0)
        b = (pid // NP).to(tl.int64)
        rows = (pid % NP) * BP + tl.arange(0, BP)
        cols = tl.program_id(1) * BC + tl.arange(0, BC)
        cmask = cols < C
        mask = (rows < P)[:, None] & cmask[None, :]
        offs = b * P * C + rows[:, None] * C + cols[None, :]
        g = cols // CG
        mean = tl.load(MEAN + b * G + g, mask=cmask, other=0.0)
        rstd = tl.load(RSTD + b * G + g, mask=cmask, other=0.0)
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        if SHIFT:
            x += tl.load(S + b * C + cols, mask=cmask, other=0.0)[None, :]
        xhat = (x - mean[None, :]) * rstd[None, :]
        bias = tl.load(B_ + cols, mask=cmask, other=0.0).to(tl.float32)
        if GRAD:
            c1 = tl.load(C1 + b * G + g, mask=cmask, other=0.0)
            c2 = tl.load(C2 + b * G + g, mask=cmask, other=0.0)
            dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
            if SILU:
                z = xhat * w[None, :] + bias[None, :]
                sg = tl.sigmoid(z)
                dy = dy * sg * (1.0 + z * (1.0 - sg))
            out = rstd[None, :] * (w[None, :] * dy - c1[None, :] - xhat * c2[None, :])
        else:
            out = xhat * w[None, :] + bias[None, :]
            if SILU:
                out = out * tl.sigmoid(out)
        tl.store(Y + offs, out.to(Y.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=["rows", "C"])
    def residual(A, B_, BIAS, OUT, rows, C, BR: tl.constexpr, BC: tl.constexpr):
        # out = a + b + bias[c] over (rows, C) memory (channels-last maps), one rounding
        r = (tl.program_id(0) * BR + tl.arange(0, BR)).to(tl.int64)
        cols = tl.program_id(1) * BC + tl.arange(0, BC)
        cmask = cols < C
        mask = (r < rows)[:, None] & cmask[None, :]
        offs = r[:, None] * C + cols[None, :]
        out = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32) + tl.load(B_ + offs, mask=mask, other=0.0)
        out += tl.load(BIAS + cols, mask=cmask, other=0.0)[None, :]
        tl.store(OUT + offs, out.to(OUT.dtype.element_ty), mask=mask)

    return apply, residual


def _launch(x, dy, weight, bias, groups, eps, stats=None, silu=False, shift=None):
    """x (and dy): (B, P, C) contiguous. Forward (dy None): returns y, mean, rstd; backward: dx.
    silu: the output is silu(group_norm(x)) (the backward needs the bias then); shift: a (B, C) float32
    tensor added to x first (its gradient is not needed)."""
    triton, tile_moments, group_combine, apply, _ = _kernels()
    bsz, p, c = x.shape
    cg = c // groups
    np_ = triton.cdiv(p, BLOCK_P)
    grid = (bsz * np_, triton.cdiv(c, BLOCK_C))
    grad = dy is not None
    part1 = torch.empty(bsz, np_, c, device=x.device, dtype=torch.float32)
    part2 = torch.empty_like(part1)
    out1 = torch.empty(bsz, groups, device=x.device, dtype=torch.float32)
    out2 = torch.empty_like(out1)
    mean, rstd = stats if grad else (out1, out2)
    if bias is None:
        bias = torch.zeros_like(weight)
    s = x if shift is None else shift  # (a pointer the kernels never read when SHIFT is 0)
    tile_moments[grid](x, s, dy if grad else x, mean, rstd, weight, bias, part1, part2, p, c, np_, groups, cg,
                       GRAD=int(grad), SILU=int(silu), SHIFT=int(shift is not None), BP=BLOCK_P, BC=BLOCK_C,
                       num_warps=WARPS)
    bg = triton.next_power_of_2(cg)
    bn = max(1, min(32, 2048 // bg))  # tiles combined per loop step (NBLK steps: a constant, few distinct)
    group_combine[(bsz * groups,)](part1, part2, weight, out1, out2, p, c, np_, groups, cg, eps, GRAD=int(grad),
                                   BP=BLOCK_P, BN=bn, BG=bg, NBLK=triton.cdiv(np_, bn))
    out = torch.empty_like(x)
    apply[grid](x, s, dy if grad else x, out, weight, bias, mean, rstd, out1, out2, p, c, np_, groups, cg,
                GRAD=int(grad), SILU=int(silu), SHIFT=int(shift is not None), BP=BLOCK_P, BC=BLOCK_C, num_warps=WARPS)
    return out if grad else (out, mean, rstd)


def _tokens(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) channels-last -> its (B, H*W, C) memory, a view."""
    bsz, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(bsz, h * w, c)


class _GroupNormNHWC(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps, silu, shift):
        y, mean, rstd = _launch(_tokens(x), None, weight, bias, groups, eps, silu=silu, shift=shift)
        ctx.save_for_backward(x, weight, bias, mean, rstd, shift)
        ctx.groups, ctx.silu = groups, silu
        bsz, c, h, w = x.shape
        return y.view(bsz, h, w, c).permute(0, 3, 1, 2)  # channels-last, like the input

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, mean, rstd, shift = ctx.saved_tensors
        dy = dy.contiguous(memory_format=torch.channels_last)  # (already so when the next layer is)
        dx = _launch(_tokens(x), _tokens(dy), weight, bias, ctx.groups, 0.0, stats=(mean, rstd), silu=ctx.silu,
                     shift=shift)
        bsz, c, h, w = x.shape
        return dx.view(bsz, h, w, c).permute(0, 3, 1, 2), None, None, None, None, None, None


def group_norm_nhwc(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor | None,
                    eps: float, silu: bool = False, shift: torch.Tensor | None = None) -> torch.Tensor:
    """F.group_norm for a channels-last (B, C, H, W) tensor with frozen affine weight; result channels-last.
    ``silu``: F.silu of it, in the same pass (and the backward's two passes: nothing more is saved).
    ``shift``: a (B, C) or (C,) tensor added to x first, per sample and channel, in float32 while the kernels
    read x (no pass of its own; no gradient for it)."""
    if shift is not None:
        shift = shift.detach().float().expand(x.shape[0], x.shape[1]).contiguous()
    return _GroupNormNHWC.apply(x, weight, bias, groups, eps, silu, shift)


def covered(norm, x: torch.Tensor) -> bool:
    # (inside a compiled region, e.g. compile_unet = "regions", inductor generates its own channels-last
    # GroupNorm: dynamo is not made to trace a Triton launch inside an autograd Function)
    return (x.is_cuda and x.dim() == 4 and norm.affine and not norm.weight.requires_grad
            and (norm.bias is None or not norm.bias.requires_grad)
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and not torch.compiler.is_compiling())


def _forward(self, x):
    if covered(self, x):
        return group_norm_nhwc(x, self.num_groups, self.weight, self.bias, self.eps)
    return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class _Residual(torch.autograd.Function):
    """a + b + bias (a (C,) float32 vector) for two channels-last maps of one shape, in one pass."""

    @staticmethod
    def forward(ctx, a, b, bias):
        triton, *_, kernel = _kernels()
        out = torch.empty_like(b)  # channels-last like b
        c = b.shape[1]
        rows = b.numel() // c
        kernel[(triton.cdiv(rows, 4), triton.cdiv(c, 256))](a, b, bias, out, rows, c, BR=4, BC=256)
        return out

    @staticmethod
    def backward(ctx, g):
        return g, g, None


def residual_add(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``a + b + bias[None, :, None, None]``: one pass where both maps are channels-last on the GPU."""
    if bias is None:
        return a + b
    if (a.shape == b.shape and a.dtype == b.dtype and a.is_cuda and b.is_cuda and not torch.compiler.is_compiling()
            and all(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() for t in (a, b))):
        return _Residual.apply(a, b, bias.detach().float().contiguous())
    return a + b + bias.view(1, -1, 1, 1).to(b.dtype)


def _bare(conv) -> bool:
    """A frozen plain Conv2d: its bias can be added elsewhere (not a LoRA-wrapped or int8-stored layer)."""
    return (type(conv) is torch.nn.Conv2d and conv.padding_mode == "zeros" and not conv.weight.requires_grad
            and (conv.bias is None or not conv.bias.requires_grad))


def _conv_no_bias(conv, x):
    return F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def _plus(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None or b is None:
        return b if a is None else a
    return a.float() + b.float()


def _resnet_forward(self, input_tensor, temb, *args, **kwargs):
    """diffusers' ResnetBlock2D forward for the plain block (no resampling, the time embedding added before
    norm2) with each GroupNorm and the SiLU after it in one pass. Also: in training diffusers makes the
    shortcut's input contiguous (for DDP's gradient strides), which for a channels-last map is a copy to NCHW
    that turns the block's output, and the next block's input, NCHW again; the shortcut conv is frozen here
    (no gradient), so the map keeps its layout. And the biases of frozen plain convolutions cost no pass of
    their own (cuDNN adds a bias as a separate pass over the map): conv1's joins the time embedding as a
    per-channel shift that norm2's kernels add while reading, conv2's and the shortcut's join the residual
    add (`residual_add`). Anything else runs diffusers' own forward."""
    if args or kwargs or not covered(self.norm1, input_tensor) or (self.time_emb_proj is None and temb is not None):
        return type(self).forward(self, input_tensor, temb, *args, **kwargs)
    n1, n2, conv1, conv2, sc = self.norm1, self.norm2, self.conv1, self.conv2, self.conv_shortcut
    h = group_norm_nhwc(input_tensor, n1.num_groups, n1.weight, n1.bias, n1.eps, silu=True)
    shift = None
    if _bare(conv1):
        h, shift = _conv_no_bias(conv1, h), conv1.bias
    else:
        h = conv1(h)
    if self.time_emb_proj is not None and temb is not None:
        shift = _plus(self.time_emb_proj(self.nonlinearity(temb)), shift)
    if shift is not None and shift.requires_grad:  # a LoRA on the time embedding: its gradient must flow
        h, shift = h + shift.view(-1, h.shape[1], 1, 1).to(h.dtype), None
    if covered(n2, h):
        h = group_norm_nhwc(h, n2.num_groups, n2.weight, n2.bias, n2.eps, silu=True, shift=shift)
    else:
        h = h if shift is None else h + shift.view(-1, h.shape[1], 1, 1).to(h.dtype)
        h = self.nonlinearity(n2(h))
    h = self.dropout(h)
    if self.output_scale_factor == 1 and _bare(conv2) and (sc is None or _bare(sc)):
        x = input_tensor if sc is None else _conv_no_bias(sc, input_tensor)
        return residual_add(x, _conv_no_bias(conv2, h), _plus(conv2.bias, None if sc is None else sc.bias))
    h = conv2(h)
    if sc is not None:
        input_tensor = sc(input_tensor)
    out = input_tensor + h
    return out if self.output_scale_factor == 1 else out / self.output_scale_factor


def _plain_resnet(sub, cls) -> bool:
    return (type(sub) is cls and sub.upsample is None and sub.downsample is None
            and sub.time_embedding_norm == "default" and not sub.skip_time_act
            and type(sub.nonlinearity) is torch.nn.SiLU and type(sub.norm1) is type(sub.norm2) is torch.nn.GroupNorm
            and (sub.conv_shortcut is None or not any(p.requires_grad for p in sub.conv_shortcut.parameters())))


def install_nhwc_group_norm(module) -> int:
    """Give every nn.GroupNorm in `module` the channels-last path (if Triton is there and its kernels pass a
    check on the module's device), and every plain ResnetBlock2D its GroupNorm + SiLU in one pass; returns how
    many GroupNorms."""
    from diffusers.models.resnet import ResnetBlock2D

    n = install_forward(module, _forward, lambda sub: type(sub) is torch.nn.GroupNorm, available)
    if n:
        install_forward(module, _resnet_forward, lambda sub: _plain_resnet(sub, ResnetBlock2D), available)
    return n


def installed(module) -> int:
    """How many of `module`'s GroupNorms run the channels-last path (`install_nhwc_group_norm`)."""
    return count_patched(module, _forward)


def uninstall_resnet_forward(module) -> int:
    """The ResnetBlock2Ds back on diffusers' forward (their GroupNorms keep the channels-last path)."""
    return unpatch(module, _resnet_forward)


def uninstall_nhwc_group_norm(module) -> int:
    uninstall_resnet_forward(module)
    return unpatch(module, _forward)
