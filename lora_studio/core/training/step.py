"""One training step, the seam the CUDA-graph fast path replaces.

``prepare_batch`` (data, VAE, text encoders when frozen, noise, timesteps) runs outside the step, so
the step itself is a pure function of tensors: forward, loss, backward, clip, optimizer step, zero grad.
``TrainingStep.__call__(batch) -> loss`` is the contract; ``accel.graphs.FastStep(step)`` is a drop-in replacement
with the same call signature (it captures the step in a CUDA graph, or runs it eagerly where it cannot).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from lora_studio.core.accel.fast_kernels import sdpa_context
from lora_studio.core.training.models import encode_tokens, module_device, tokenize_all


def snr_weights(noise_scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) per example."""
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    clipped = torch.clamp(snr, max=gamma)
    # v-prediction's loss already carries a factor snr+1 relative to epsilon's.
    return clipped / (snr + 1.0) if prediction_type == "v_prediction" else clipped / snr


class TrainingStep:
    """Loss of one micro-batch, backward, and (at accumulation boundaries) clip + update + zero grad."""

    def __init__(self, accelerator, unet, text_encoders, models, optimizer, lr_scheduler, params, config,
                 weight_dtype, accel=None):
        self.accelerator = accelerator
        self.unet = unet
        self.text_encoders = text_encoders  # the (possibly wrapped) encoders; trained only if configured
        self.models = models
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.params = list(params)  # a real list: clipping must see every trainable tensor
        self.config = config
        self.weight_dtype = weight_dtype
        self.prediction_type = models.noise_scheduler.config.prediction_type
        self._empty = None  # the base model's empty-prompt embeddings (preserve_unconditional)
        self._empty_ids = None  # its token ids on the encoders' devices (a captured step cannot copy from the host)
        # What the fast path's `accel.prepare` decided for this UNet: the forward without autocast (inputs cast to
        # weight_dtype below: a pure bf16 step), channels-last latents (a channels-last UNet), an attention backend.
        self.autocast = accel.autocast if accel is not None else True
        self.sdpa_backend = accel.sdpa_backend if accel is not None else None
        self.channels_last = accel.channels_last if accel is not None else False

    # ------------------------------------------------------------------ pieces
    def _conditioning(self, part):
        if "prompt_embeds" in part:
            return part["prompt_embeds"], part.get("pooled")
        return encode_tokens(self.models, part["input_ids"], self.text_encoders)

    def _per_example_loss(self, part) -> torch.Tensor:
        sched = self.models.noise_scheduler
        latents, noise, timesteps = part["latents"], part["noise"], part["timesteps"]
        noisy = sched.add_noise(latents, noise, timesteps)
        target = noise if self.prediction_type == "epsilon" else sched.get_velocity(latents, noise, timesteps)
        embeds, pooled = self._conditioning(part)
        pred = self._predict(noisy, timesteps, embeds, pooled, part.get("time_ids"))
        loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.config.snr_gamma > 0:
            loss = loss * snr_weights(sched, timesteps, self.config.snr_gamma, self.prediction_type)
        return loss

    def loss(self, batch) -> torch.Tensor:
        total = self._prompt_loss(batch)
        if self.config.preserve_unconditional > 0:
            total = total + self.config.preserve_unconditional * self._unconditional_loss(batch["parts"][0])
        return total

    def _empty_prompt(self, trainable: bool):
        """(embeds, pooled) of the empty prompt; SDXL's are zeros (``force_zeros_for_empty_prompt``)."""
        m = self.models
        if self._empty is None:
            with torch.no_grad(), _adapters_off(*m.text_encoders):
                # The encoders may be off the GPU (cached text): each visits the training device for the call.
                embeds, pooled = encode_tokens(m, tokenize_all(m, [""]), visit=self.accelerator.device)
            if m.is_sdxl:
                embeds, pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
            self._empty = (embeds.float(), None if pooled is None else pooled.float())
        if trainable and self.config.train_text_encoder and not m.is_sdxl:
            # The text-encoder LoRA also shapes the unconditional branch: keep it in the graph. The token ids
            # are made once (the first, eager call) and kept on the GPU: the captured step reads them there.
            if self._empty_ids is None:
                self._empty_ids = [ids.to(module_device(enc))
                                   for ids, enc in zip(tokenize_all(m, [""]), m.text_encoders)]
            return encode_tokens(m, self._empty_ids, self.text_encoders)
        return self._empty

    def _predict(self, noisy, timesteps, embeds, pooled, time_ids) -> torch.Tensor:
        """The UNet's prediction in the step's arithmetic: autocast, or the pure low-precision step the fast path
        may choose (inputs cast to the frozen weights' dtype), with the fast path's attention backend."""
        kwargs = {}
        if self.models.is_sdxl:
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled.to(self.weight_dtype),
                                           "time_ids": time_ids.to(self.weight_dtype)}
        amp = self.accelerator.autocast() if self.autocast else contextlib.nullcontext()
        x = noisy.to(self.weight_dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp, sdpa_context(self.sdpa_backend):
            return self.unet(x, timesteps, embeds.to(self.weight_dtype), return_dict=False, **kwargs)[0]

    def _unconditional_loss(self, part) -> torch.Tensor:
        """MSE between the LoRA model's and the base model's empty-prompt predictions on this batch's noisy latents.

        The base prediction is the same UNet with its adapters switched off. Without this term a LoRA on the
        convolutions also moves the unconditional prediction, and guidance ``u + g (c - u)`` then cancels
        what the LoRA learned instead of amplifying it.

        Both forwards run in the prompt loss's arithmetic: autocast when ``self.autocast`` is on, the pure
        bf16 step when the fast path turned it off (then every LoRA layer is on the fast Linear forward, which
        computes in the input's dtype, and the frozen weights are bf16: autocast would only add fp32 norms and
        casts). Either way target and prediction share one precision, so the term measures the adapter, not
        a rounding difference. Flipping the adapters is a Python flag, so a CUDA-graph capture records both
        forwards as they are (the adapters-off one with its layers skipped).
        """
        sched = self.models.noise_scheduler
        latents, noise, timesteps = part["latents"], part["noise"], part["timesteps"]
        noisy = sched.add_noise(latents, noise, timesteps)
        n = noisy.shape[0]

        def predict(embeds, pooled):  # the one empty prompt, broadcast over the batch
            pooled = None if pooled is None else pooled.to(noisy.device).expand(n, -1)
            return self._predict(noisy, timesteps, embeds.to(noisy.device).expand(n, -1, -1), pooled,
                                 part.get("time_ids"))

        with torch.no_grad(), _adapters_off(self.unet):
            target = predict(*self._empty_prompt(trainable=False))
        pred = predict(*self._empty_prompt(trainable=True))
        return F.mse_loss(pred.float(), target.float())

    def _prompt_loss(self, batch) -> torch.Tensor:
        parts = batch["parts"]
        if len(parts) == 2 and _same_shapes(parts[0], parts[1]):
            # Instance and class examples in one forward pass, as diffusers' DreamBooth script does.
            merged = {k: _cat(parts[0][k], parts[1][k]) for k in parts[0]}
            per = self._per_example_loss(merged)
            n = parts[0]["latents"].shape[0]
            return per[:n].mean() + self.config.prior_loss_weight * per[n:].mean()
        total = self._per_example_loss(parts[0]).mean()
        if len(parts) == 2:
            total = total + self.config.prior_loss_weight * self._per_example_loss(parts[1]).mean()
        return total

    # ------------------------------------------------------------------ the step
    def __call__(self, batch) -> torch.Tensor:
        acc = self.accelerator
        with acc.accumulate(*self.trained_modules()):
            loss = self.loss(batch)
            acc.backward(loss)
            if acc.sync_gradients and self.config.max_grad_norm > 0:
                acc.clip_grad_norm_(self.params, self.config.max_grad_norm)
            self.optimizer.step()
            if acc.sync_gradients:
                self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def trained_modules(self):
        return [self.unet, *(self.text_encoders if self.config.train_text_encoder else [])]


@contextlib.contextmanager
def _adapters_off(*modules):
    """Run the base model: the LoRA layers inside ``modules`` switched off (diffusers' helper), back on after."""
    from diffusers.utils.peft_utils import set_adapter_layers

    models = [getattr(module, "module", module) for module in modules]  # accelerate's DDP wrapper
    for model in models:
        set_adapter_layers(model, enabled=False)
    try:
        yield
    finally:
        for model in models:
            set_adapter_layers(model, enabled=True)


def _same_shapes(a, b) -> bool:
    return a["latents"].shape[1:] == b["latents"].shape[1:] and all(
        (a[k].shape[1:] if torch.is_tensor(a[k]) else None) == (b[k].shape[1:] if torch.is_tensor(b[k]) else None)
        for k in a if k != "input_ids")


def _cat(x, y):
    if torch.is_tensor(x):
        return torch.cat([x, y])
    return [torch.cat([a, b]) for a, b in zip(x, y)]  # token ids, one tensor per encoder
