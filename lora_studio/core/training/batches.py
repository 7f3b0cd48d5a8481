"""Turn a micro-step number into the tensors of one training step (latents, noise, timesteps, text)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch

from lora_studio.core.training.data import BatchOrder, Example, generator, load_example
from lora_studio.core.training.models import Models, encode_tokens, sdxl_time_ids, tokenize_all


def _latent_moments(models: Models, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    vae = models.vae
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    return dist.mean.float(), dist.std.float()


def _scale(models: Models, latents: torch.Tensor) -> torch.Tensor:
    cfg = models.vae.config
    shift = getattr(cfg, "shift_factor", None) or 0.0
    return (latents - shift) * cfg.scaling_factor


def _prefetched(fn, items: list, ahead: int = 8, threads: int = 4):
    """``fn(item)`` for each item in order, computed by a few threads at most ``ahead`` items in advance (a
    thousand pictures never sit in memory at once)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = deque(pool.submit(fn, item) for item in items[:ahead])
        for nxt in items[ahead:] + [None] * min(ahead, len(items)):
            yield pending.popleft().result()
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))


class BatchMaker:
    """Deterministic batches: micro-step m always gives the same examples, crops, flips, noise and timesteps."""

    def __init__(self, models: Models, config, device, orders: list[BatchOrder], cache_latents: bool,
                 cache_text: bool, process_index: int = 0):
        self.models, self.config, self.device = models, config, device
        self.orders = orders  # [instance/style order] (+ [class order] with prior preservation)
        self.cache_latents, self.cache_text = cache_latents, cache_text
        self.process_index = process_index
        self.latent_cache: dict[tuple, tuple] = {}
        self.text_cache: dict[str, tuple] = {}

    # ---------------------------------------------------------------- caches
    @torch.no_grad()
    def fill_caches(self, progress=None, disk=None) -> dict:
        """Encode every picture and caption once (``disk``: a DiskCache read first and filled after);
        returns what was encoded and what was read from disk."""
        examples = {(ex.path, ex.bucket): ex for order in self.orders for ex in order.examples}
        captions = sorted({ex.caption for order in self.orders for ex in order.examples})
        todo = (len(examples) if self.cache_latents else 0) + (len(captions) if self.cache_text else 0)
        counts = {"encoded": 0, "read": 0}

        def tick(kind):
            counts[kind] += 1
            if progress:
                progress(counts["encoded"] + counts["read"], todo)

        if self.cache_latents:
            self._cache_latents(examples, disk, tick)
        if self.cache_text:
            self._cache_text(captions, disk, tick)
        return counts

    def _cache_latents(self, examples: dict, disk, tick) -> None:
        from lora_studio.core.training.disk_cache import fingerprint, picture_key

        weights = fingerprint(self.models.vae) if disk is not None else ""
        names = {key: picture_key(ex.path, ex.bucket, weights) if disk is not None else None
                 for key, ex in examples.items()}
        missing = []
        for key, ex in examples.items():
            hit = disk.get(names[key]) if disk is not None else None
            if hit is not None and {"mean", "std", "crop"} <= set(hit):
                self.latent_cache[key] = (hit["mean"].to(self.device), hit["std"].to(self.device),
                                          tuple(int(v) for v in hit["crop"]))
                tick("read")
            else:
                missing.append(key)
        # Pictures are opened and resized by a few threads (PIL releases the GIL) while the VAE encodes the one
        # before: CPU work that would otherwise wait for the GPU and the GPU for it.
        load = lambda key: load_example(examples[key], center_crop=True, random_flip=False, gen=None)  # noqa: E731
        for key, (pixels, crop) in zip(missing, _prefetched(load, missing)):
            mean, std = _latent_moments(self.models, pixels[None].to(self.device))
            self.latent_cache[key] = (mean[0], std[0], crop)
            if disk is not None:
                disk.put(names[key], {"mean": mean[0], "std": std[0], "crop": torch.tensor(crop)})
            tick("encoded")

    def _cache_text(self, captions: list[str], disk, tick, chunk: int = 32) -> None:
        from lora_studio.core.training.disk_cache import caption_key, fingerprint

        weights = fingerprint(*self.models.text_encoders) if disk is not None else ""
        missing = []
        for caption in captions:
            hit = disk.get(caption_key(caption, weights)) if disk is not None else None
            if hit is not None and "embeds" in hit:
                self.text_cache[caption] = (hit["embeds"], hit.get("pooled"))
                tick("read")
            else:
                missing.append(caption)
        for i in range(0, len(missing), chunk):
            # Captions go through the encoders together, each encoder on the GPU for its call only.
            part = missing[i:i + chunk]
            embeds, pooled = encode_tokens(self.models, tokenize_all(self.models, part), visit=self.device)
            for j, caption in enumerate(part):
                entry = (embeds[j].float(), None if pooled is None else pooled[j].float())
                self.text_cache[caption] = entry
                if disk is not None:
                    disk.put(caption_key(caption, weights), {"embeds": entry[0], "pooled": entry[1]})
                tick("encoded")

    # ---------------------------------------------------------------- one step
    @torch.no_grad()
    def __call__(self, micro_step: int) -> dict:
        parts = []
        for k, order in enumerate(self.orders):
            gen = generator(self.config.seed, micro_step, self.process_index, k)
            parts.append(self._part(order.batch(micro_step), gen))
        return {"parts": parts, "micro_step": micro_step}

    def _part(self, examples: list[Example], gen: torch.Generator) -> dict:
        cfg, models = self.config, self.models
        means, stds, crops = [], [], []
        if self.cache_latents:
            for ex in examples:
                mean, std, crop = self.latent_cache[(ex.path, ex.bucket)]
                means.append(mean)
                stds.append(std)
                crops.append(crop)
            mean, std = torch.stack(means), torch.stack(stds)
        else:
            pix = []
            for ex in examples:
                p, crop = load_example(ex, cfg.center_crop, cfg.random_flip, gen)
                pix.append(p)
                crops.append(crop)
            mean, std = _latent_moments(models, torch.stack(pix).to(self.device))
        latents = mean + std * torch.randn(mean.shape, generator=gen).to(mean.device)
        latents = _scale(models, latents)
        noise = torch.randn(latents.shape, generator=gen)
        if cfg.noise_offset > 0:
            noise = noise + cfg.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=gen)
        n_train = models.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, n_train, (latents.shape[0],), generator=gen)
        part = {"latents": latents.to(self.device), "noise": noise.to(self.device),
                "timesteps": timesteps.to(self.device).long()}
        captions = [ex.caption for ex in examples]
        if self.cache_text:
            part["prompt_embeds"] = torch.stack([self.text_cache[c][0] for c in captions]).to(self.device)
            if models.is_sdxl:
                part["pooled"] = torch.stack([self.text_cache[c][1] for c in captions]).to(self.device)
        else:
            part["input_ids"] = [ids.to(self.device) for ids in tokenize_all(models, captions)]
        if models.is_sdxl:
            part["time_ids"] = torch.stack([
                sdxl_time_ids((ex.size[1], ex.size[0]), crop, (ex.bucket[1], ex.bucket[0]))
                for ex, crop in zip(examples, crops)]).to(self.device)
        return part
