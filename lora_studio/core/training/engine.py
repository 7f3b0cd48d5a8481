"""``train(config, emit, stop) -> result``: the one training engine behind the CLI and the Training tab.

The run reads top to bottom as named steps (`_Run.run`): preflight, accelerator, models, class images, LoRA,
data, optimizer, step (on the fast path: the UNet prepared by `core.accel` and the step captured in CUDA
graphs), resume, loop, save. The parts are phases (load, class_images, cache, setup, train, samples, save), each
ending with a ``Phase`` event (seconds, peak GPU memory) and each with its place in the memory plan
(core/training/memory.py: only the UNet lives on the GPU). Every outcome is an event: ``Finished`` once on
success (also after a stop, with ``result["stopped"] = True``), ``Failed`` before the exception is re-raised
otherwise.
"""

from __future__ import annotations

import importlib.util
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from lora_studio.core.events import Checkpoint, Failed, Finished, Progress, Sample, Started, Warning
from lora_studio.core.training import preflight
from lora_studio.core.training.data import step_seed
from lora_studio.core.training.lora import ADAPTER_FILE, build_lora, save_adapter, trainable_modules
from lora_studio.errors import LoraStudioError, describe


class TrainingFailed(LoraStudioError):
    """The run stopped on an error; a ``Failed`` event with the same message was already emitted."""


def _stop_fn(stop) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if isinstance(stop, threading.Event) or hasattr(stop, "is_set"):
        return stop.is_set
    return stop


def train(config, emit: Callable | None = None, stop=None, *, resume: bool = False) -> dict[str, Any]:
    """Train a LoRA / DreamBooth-LoRA; return the result dict (also sent in the ``Finished`` event)."""
    run = _Run(config, emit if emit is not None else (lambda event: None), _stop_fn(stop), resume)
    try:
        return run.run()
    except TrainingFailed:
        raise
    except Exception as exc:
        message, advice = _failure_words(exc, config)
        run.emit(Failed(message, advice))
        raise TrainingFailed(message, advice) from exc
    finally:
        run.close()


def _failure_words(exc: BaseException, config) -> tuple[str, str]:
    if type(exc).__name__ == "OutOfMemoryError":
        tips = []
        if not config.gradient_checkpointing:
            tips.append("set gradient_checkpointing = true")
        if config.train_batch_size > 1:
            tips.append(f"lower train_batch_size from {config.train_batch_size} to {config.train_batch_size // 2} "
                        f"(and raise gradient_accumulation_steps to {config.gradient_accumulation_steps * 2} "
                        "to keep the effective batch)")
        if config.mixed_precision == "no":
            tips.append("set mixed_precision = \"fp16\" (or \"bf16\")")
        if not config.cache_latents:
            tips.append("set cache_latents = true")
        if config.train_text_encoder:
            tips.append("set train_text_encoder = false")
        if not config.int8_base:
            tips.append("set int8_base = true (the frozen UNet in 8 bits: ~2 GB less for SDXL)")
        tips.append(f"lower resolution from {config.resolution} to {max(256, config.resolution * 3 // 4 // 64 * 64)}")
        if config.rank > 16:
            tips.append(f"lower rank from {config.rank} to 16")
        return (f"the GPU ran out of memory (batch {config.train_batch_size} at {config.resolution} px, "
                f"rank {config.rank}).", "; ".join(tips) + ".")
    return describe(exc)


def _why_latents_are_not_cached(examples, cfg) -> str:
    """The true reason, naming the setting and a picture: the old one-size message blamed flips that were off."""
    from lora_studio.core.training.data import crops_at_random

    if cfg.random_flip:
        return ("cache_latents is off for this run: random_flip = true mirrors pictures at random every epoch "
                "(set random_flip = false to cache their latents).")
    loose = [ex for ex in examples if crops_at_random(ex)]
    ex = loose[0]
    return (f"cache_latents is off for this run: {len(loose)} of {len(examples)} pictures do not fit their "
            f"bucket exactly (e.g. {ex.path.name}, {ex.size[0]}x{ex.size[1]} into {ex.bucket[0]}x{ex.bucket[1]}) "
            "and center_crop = false crops them at a random place every epoch (set center_crop = true to cache "
            "their latents: faster, and the VAE leaves the GPU).")


class _Run:
    def __init__(self, config, emit, should_stop, resume):
        self.config = config
        self._emit = emit
        self.should_stop = should_stop
        self.resume = resume
        self.accelerator = None
        self.output_dir = Path(config.output_dir)
        self.loss_history: list[list] = []
        self.samples: list[str] = []
        self.last_checkpoint: str | None = None
        self.tensorboard = False
        self.params: list | None = None
        self.int8_saved_bytes = 0
        self.accel = None  # what core.accel changed on the UNet (the fast path)
        self.ema = None  # the moving average of the LoRA weights (ema_decay > 0)
        self.validation_embeds = None  # the samples' prompt, encoded with the captions (cached text)
        self.base_facts = None  # Future: the base model's name and hashes for the main file's metadata

    def emit(self, event) -> None:
        if self.accelerator is None or self.accelerator.is_main_process:
            self._emit(event)

    # ------------------------------------------------------------------ the run, top to bottom
    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.started_at = time.time()  # wall clock, for the file's ss_training_started_at
        examples, ref = self.preflight()
        self.examples = examples
        self.setup_accelerator()
        if self.accelerator.is_main_process:
            import json

            from lora_studio.config import save
            from lora_studio.core.io import write_text

            save(self.config, self.output_dir / "config.toml")
            record = preflight.dataset_record(examples, self.config)
            write_text(self.output_dir / "dataset.json", json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        with self.phase("load"):
            self.load_models()
            if self.config.int8_base:
                self.add_lora()  # the LoRA goes in before the frozen weights are stored in 8 bits and moved to the GPU
        class_paths = []
        if self.config.with_prior_preservation:
            with self.phase("class_images") as note:
                class_paths = self.class_images(note)
        if self.should_stop() and self.config.with_prior_preservation and \
                len(class_paths) < self.config.num_class_images:
            return self.finish_early(t0, "stopped while generating class images")
        if self.params is None:
            self.add_lora()
        else:
            from accelerate.utils import set_seed

            set_seed(self.config.seed)  # the same random state whether class images were made or found
        with self.phase("cache") as note:
            self.prepare_data(examples, class_paths, note)
        with self.phase("setup"):
            self.setup_memory()
            self.make_optimizer()
            self.make_step()
            if self.config.ema_decay > 0:
                from lora_studio.core.training.ema import LoraEma

                self.ema = LoraEma(self.params, self.config.ema_decay)
            start_step, micro = self.restore()
        with self.phase("train"):
            stopped = self.loop(start_step, micro)
        return self.save_final(stopped, t0, len(class_paths))

    def phase(self, name: str):
        from lora_studio.core.training.memory import phase

        return phase(name, self.device, self.emit)

    # ------------------------------------------------------------------ steps
    def preflight(self):
        cfg = self.config
        preflight.check_config(cfg)
        from lora_studio.core.system import training_device

        device = training_device()
        self.config = cfg = preflight.resolve_precision(cfg, device)
        preflight.check_precision(cfg, device)
        preflight.check_device(cfg, device)
        preflight.check_optimizer(cfg)
        preflight.check_instance_token(cfg)
        ref = preflight.check_model(cfg)
        examples = preflight.collect_examples(cfg)
        self.train_device = device
        self.config = cfg = preflight.check_trigger(cfg, self.emit)
        if self.resume:
            from lora_studio.core.training.checkpoint import latest_checkpoint

            if latest_checkpoint(self.output_dir) is None:
                self.emit(Warning(f"--resume: no checkpoint in {self.output_dir / 'checkpoints'}; "
                                  "starting from step 0."))
        return examples, ref

    def setup_accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        cfg = self.config
        log_with = None
        if cfg.report_to == "tensorboard":
            if importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX"):
                log_with = "tensorboard"
            else:
                self._emit_later = Warning("TensorBoard logs are off: the 'tensorboard' package is not installed "
                                           "(pip install tensorboard), or set report_to = \"none\".")
        self.accelerator = Accelerator(
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            mixed_precision=cfg.mixed_precision,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir),
                                                logging_dir=str(self.output_dir / "logs")),
            cpu=self.train_device.type == "cpu",
        )
        if getattr(self, "_emit_later", None) is not None:
            self.emit(self._emit_later)
        if log_with and self.accelerator.is_main_process:
            self.accelerator.init_trackers("lora_studio", config={k: v for k, v in cfg.to_dict().items()
                                                                  if isinstance(v, (int, float, str, bool))})
            self.tensorboard = True
        self.device = self.accelerator.device
        from lora_studio.core.system import precision_dtype

        self.weight_dtype = precision_dtype(cfg.mixed_precision)

    def load_models(self):
        from lora_studio.core.training.models import load_models

        cfg = self.config
        self.models = m = load_models(cfg.pretrained_model_name_or_path, self.weight_dtype)
        if self.accelerator.is_main_process:  # the main file's metadata names the base model by its hash
            from lora_studio.core.lora_files.metadata import base_model_facts_later

            self.base_facts = base_model_facts_later(cfg.pretrained_model_name_or_path)
        if cfg.prediction_type:
            m.noise_scheduler.register_to_config(prediction_type=cfg.prediction_type)
        # Frozen weights in the run's precision; the VAE stays fp32 (SDXL's VAE overflows in fp16).
        # The memory plan (core/training/memory.py): only the UNet lives on the GPU from here on; the VAE and the
        # text encoders go there for the phases that use them (prepare_data keeps them there when not cached).
        for module, dtype in [(m.unet, self.weight_dtype), (m.vae, torch.float32),
                              *[(enc, self.weight_dtype) for enc in m.text_encoders]]:
            if module.dtype != dtype:
                module.to(dtype=dtype)
        if not cfg.int8_base:  # int8_base: the UNet moves once quantised (add_lora)
            m.unet.to(self.device)

    def add_lora(self):
        from accelerate.utils import set_seed

        set_seed(self.config.seed)  # LoRA init (A is random) must not depend on what ran before
        self.params = build_lora(self.models, self.config)
        if self.config.int8_base:
            from lora_studio.core.accel import Options, prepare

            # Quantised on the GPU layer by layer (one 16-bit layer there at a time): SDXL's UNet took ~100 s
            # on the CPU side.
            self.int8_saved_bytes = prepare(self.models.unet, Options(int8=True, int8_device=self.device)
                                            ).int8_saved_bytes
            self.models.unet.to(self.device)  # Module.to keeps the Parameter objects: self.params stays valid

    def class_images(self, note: list) -> list[Path]:
        from lora_studio.core.training.class_images import ensure_class_images
        from lora_studio.core.training.memory import release

        cfg = self.config
        paths: list[Path] = []
        if self.accelerator.is_main_process:
            with self.accelerator.autocast():
                paths = ensure_class_images(self.models, cfg, self.device, self.emit, self.should_stop,
                                            cfg.resolution, cfg.sample_steps, note)
        release(self.device)  # the pipeline's activations go before training memory is laid out
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            from lora_studio.core.training.class_images import existing_class_images

            paths = existing_class_images(Path(cfg.class_data_dir))[: cfg.num_class_images]
        return paths

    def setup_memory(self):
        from lora_studio.core.accel.graphs import capturable_checkpointing, fast_path_reason

        cfg = self.config
        self.fast_reason = fast_path_reason(cfg, self.device)
        if self.accelerator.num_processes > 1 and self.fast_reason is None:
            self.fast_reason = "several processes (data-parallel gradient sync is outside the graph)"
        if cfg.gradient_checkpointing:
            if self.fast_reason is None:
                capturable_checkpointing(self.models.unet)
            else:
                self.models.unet.enable_gradient_checkpointing()
            if cfg.train_text_encoder:
                for enc in self.models.text_encoders:
                    enc.gradient_checkpointing_enable()
        for module in trainable_modules(self.models, cfg):
            module.train()

    def prepare_data(self, examples, class_paths, note: list):
        from lora_studio.core.training.batches import BatchMaker
        from lora_studio.core.training.data import BatchOrder, augmentations_random

        cfg, acc = self.config, self.accelerator
        orders = [BatchOrder(examples, cfg.train_batch_size, cfg.seed, cfg.repeats, acc.num_processes,
                             acc.process_index)]
        all_examples = list(examples)
        if class_paths:
            class_ex = preflight.class_examples(class_paths, cfg)
            orders.append(BatchOrder(class_ex, cfg.train_batch_size, cfg.seed, 1, acc.num_processes,
                                     acc.process_index, salt=1))
            all_examples += class_ex
        cache_latents = cfg.cache_latents and not augmentations_random(all_examples, cfg)
        if cfg.cache_latents and not cache_latents:
            self.emit(Warning(_why_latents_are_not_cached(all_examples, cfg)))
        cache_text = cfg.cache_text_embeddings and not cfg.train_text_encoder
        self.batches = BatchMaker(self.models, cfg, self.device, orders, cache_latents, cache_text,
                                  acc.process_index)
        self.fill_caches(all_examples, cache_latents, cache_text, note)

    def fill_caches(self, all_examples, cache_latents: bool, cache_text: bool, note: list) -> None:
        """Encode once (reading what an earlier run left on disk); then the VAE and text encoders leave the GPU
        if cached, or stay there for the step if not. Pictures are encoded whole (never in tiles, which would
        change the latents): where one picture or the largest text encoder does not fit beside the UNet, the UNet
        waits on the CPU meanwhile (memory.room_for)."""
        from lora_studio.core.training.disk_cache import DiskCache
        from lora_studio.core.training.memory import encode_room, encoder_room, prompt_embeds, release, room_for, \
            set_vae_tiling

        cfg, m = self.config, self.models
        m.vae.to(self.device)
        set_vae_tiling(m.vae, False)
        need = max(encode_room(cfg.resolution) if cache_latents else 0,
                   encoder_room(m, self.device) if cache_text else 0)
        with room_for(m, need, self.device, note):
            if cache_latents or cache_text:
                total = (len({(e.path, e.bucket) for e in all_examples}) if cache_latents else 0) + \
                    (len({e.caption for e in all_examples}) if cache_text else 0)
                self.emit(Started(total_steps=total, phase="cache", description="encoding images and captions once"))
                counts = self.batches.fill_caches(lambda done, todo: self.emit(Progress(step=done, total=todo,
                                                                                        phase="cache")),
                                                  disk=DiskCache() if cfg.disk_cache else None)
                note.append(f"{counts['encoded']} encoded, {counts['read']} read from disk")
                if cache_text and cfg.validation_prompt and self.accelerator.is_main_process:
                    # The samples' prompt too, while the encoders visit: a small card then never needs an encoder
                    # beside the training UNet (the encoders are frozen when captions are cached).
                    self.validation_embeds = prompt_embeds(m, [cfg.validation_prompt], self.device)
            if cache_latents:
                m.vae.to("cpu")
            for enc in m.text_encoders:
                enc.to("cpu" if cache_text else self.device)
            release(self.device)  # the UNet comes back (room_for) to a card holding only what training needs
        m.unet.to(self.device)

    def make_optimizer(self):
        """The optimizer over the trained modules' LoRA parameters and its LR schedule, through accelerate."""
        from diffusers.optimization import get_scheduler

        from lora_studio.core.accel.graphs import capturable_adamw

        cfg, acc, m = self.config, self.accelerator, self.models
        unet_params = [p for p in m.unet.parameters() if p.requires_grad]
        groups = [{"params": unet_params, "lr": cfg.learning_rate}]
        if cfg.train_text_encoder:
            te = [p for enc in m.text_encoders for p in enc.parameters() if p.requires_grad]
            groups.append({"params": te, "lr": cfg.text_encoder_lr})
        kw = dict(betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
        if cfg.optimizer == "adamw8bit":
            import bitsandbytes as bnb

            optimizer = bnb.optim.AdamW8bit(groups, lr=cfg.learning_rate, **kw)
        elif cfg.optimizer == "prodigy":
            import prodigyopt

            optimizer = prodigyopt.Prodigy(groups, lr=cfg.learning_rate, betas=kw["betas"],
                                           weight_decay=kw["weight_decay"], eps=kw["eps"])
        elif self.fast_reason is None:
            # One learning-rate tensor per group (UNet, text encoders): a plain AdamW cannot be captured.
            optimizer = capturable_adamw(groups, lr=cfg.learning_rate, device=self.device, **kw)
        else:
            optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, **kw)
        # One scheduler step per optimizer update on every process: no scaling by the process count.
        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                          num_training_steps=cfg.max_train_steps)
        trained = [m.unet, *(m.text_encoders if cfg.train_text_encoder else [])]
        prepared = acc.prepare(*trained, optimizer)
        self.unet, self.trained_encoders, self.optimizer = prepared[0], list(prepared[1:-1]), prepared[-1]

    def make_step(self):
        """The training step; on the fast path, on the accelerated UNet and captured in CUDA graphs."""
        from lora_studio.core.training.step import TrainingStep

        cfg, m = self.config, self.models
        text_encoders = self.trained_encoders if cfg.train_text_encoder else m.text_encoders
        warn = lambda msg: self.emit(Warning(msg))  # noqa: E731
        if self.fast_reason is None:
            from lora_studio.core.accel import Options, compile_choice, prepare

            # accelerate wraps the forward in autocast; the fast step decides that itself (pure bf16).
            self.unet = self.accelerator.unwrap_model(self.unet, keep_fp32_wrapper=False)
            self.accel = prepare(self.unet, Options.training(self.weight_dtype, pure=not cfg.train_text_encoder,
                                                             compile=compile_choice(cfg.compile_unet),
                                                             on_warning=warn))
        step = TrainingStep(self.accelerator, self.unet, text_encoders, m, self.optimizer, self.lr_scheduler,
                            self.params, cfg, self.weight_dtype, accel=self.accel)
        self.step_fn = step
        if self.accel is not None:
            self.step_fn = self.accel.capture_step(step, device=self.device, params=self.params, on_warning=warn)

    def restore(self) -> tuple[int, int]:
        from lora_studio.core.training.checkpoint import latest_checkpoint, load_checkpoint

        if not self.resume:
            return 0, 0
        path = latest_checkpoint(self.output_dir)
        if path is None:
            return 0, 0
        state = load_checkpoint(path, self.models, self.config, self.optimizer, self.lr_scheduler, self.accelerator)
        self.loss_history = [list(x) for x in state.get("loss_history", [])]
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.last_checkpoint = str(path)
        self.emit(Warning(f"resumed from {path.name} (step {state['step']})."))
        return int(state["step"]), int(state["micro_step"])

    def loop(self, step: int, micro: int) -> bool:
        cfg, acc = self.config, self.accelerator
        total = cfg.max_train_steps
        self.emit(Started(total_steps=total, phase="train",
                          description=f"{cfg.mode} LoRA, rank {cfg.rank}, alpha {cfg.alpha:g}, "
                                      f"{self.models.family}, {acc.num_processes} process(es)"))
        start_step, t_start = step, time.perf_counter()
        window: list[tuple[int, float]] = [(step, t_start)]
        self.micro = micro
        while step < total:
            if self._stop_requested():
                return True
            losses = []
            for _ in range(cfg.gradient_accumulation_steps):
                batch = self.batches(micro)
                # Dropout draws from the global generator: seed it per micro-step so a resumed run matches.
                torch.manual_seed(step_seed(cfg.seed, micro, acc.process_index))
                losses.append(self.step_fn(batch))
                micro += 1
            step += 1
            self.micro = micro
            if self.ema is not None:
                self.ema.update()
            loss = torch.stack(losses).float().mean()
            if acc.num_processes > 1:
                loss = acc.gather(loss[None].to(self.device)).mean()
            loss = float(loss)
            if not math.isfinite(loss):
                self._fail_nonfinite(step, loss)
            self.loss_history.append([step, loss])
            now = time.perf_counter()
            window = (window + [(step, now)])[-21:]
            self.emit(self._progress(step, total, loss, window, start_step, t_start))
            if self.tensorboard:
                acc.log({"loss": loss, "lr": self.lr_scheduler.get_last_lr()[0]}, step=step)
            if step % cfg.checkpointing_steps == 0 and step < total:
                self.checkpoint(step, micro)
            if cfg.validation_prompt and step % cfg.validation_steps == 0 and step < total:
                self.make_samples(step)
        return False

    def _stop_requested(self) -> bool:
        flag = bool(self.should_stop())
        if self.accelerator.num_processes > 1:  # every process stops at the same step
            t = torch.tensor([1.0 if flag else 0.0], device=self.device)
            flag = bool(self.accelerator.reduce(t, reduction="sum").item() > 0)
        return flag

    def _progress(self, step, total, loss, window, start_step, t_start) -> Progress:
        (s0, t0), (s1, t1) = window[0], window[-1]
        rate = (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None
        if rate is None:
            spent = t1 - t_start
            rate = (step - start_step) / spent if spent > 0 else None
        eta = (total - step) / rate if rate else 0.0
        used = peak = cap = None
        if self.device.type in ("cuda", "mps"):
            from lora_studio.core.system import memory_reading

            used, peak, cap = memory_reading(self.device)
        return Progress(step=step, total=total, loss=loss, lr=float(self.lr_scheduler.get_last_lr()[0]),
                        it_per_s=rate, eta_s=float(eta), vram_used=used, vram_peak=peak, vram_total=cap)

    def _fail_nonfinite(self, step: int, loss: float):
        kept = f" The last good checkpoint is {self.last_checkpoint}; `--resume` continues from it." \
            if self.last_checkpoint else " No checkpoint was written before it."
        advice = (f"lower learning_rate (now {self.config.learning_rate:g})"
                  + (", use mixed_precision = \"bf16\" or \"no\" instead of \"fp16\""
                     if self.config.mixed_precision == "fp16" else "")
                  + ", keep max_grad_norm at 1.0, and check the images (`lora-studio dataset check`)." + kept)
        message = f"the loss became {loss} at step {step}; training stopped there."
        self.emit(Failed(message, advice))
        raise TrainingFailed(message, advice)

    # ------------------------------------------------------------------ outputs
    def checkpoint(self, step: int, micro: int):
        from lora_studio.core.training.checkpoint import save_checkpoint

        if self.accelerator.is_main_process:
            path = save_checkpoint(self.output_dir, step, micro, self.models, self.config, self.optimizer,
                                   self.lr_scheduler, self.accelerator, self.loss_history,
                                   self.config.checkpoints_total_limit, ema=self.ema)
            self.last_checkpoint = str(path)
            self.emit(Checkpoint(path=str(path), step=step))
        self.accelerator.wait_for_everyone()

    @torch.no_grad()
    def make_samples(self, step: int, saved: str | None = None):
        """Samples from the LoRA as it is; ``saved``: the final samples, after the LoRA was saved there (an
        out-of-memory error then skips them with a warning instead of failing the finished run)."""
        from lora_studio.core.training.memory import release

        cfg, m = self.config, self.models
        # After training the UNet may step out for the text encoders and the decode (the memory plan); during
        # training it may not: the captured step holds its tensors' addresses.
        movable = getattr(self, "step_fn", None) is None
        note: list = []
        if self.accelerator.is_main_process:
            unet = self.accelerator.unwrap_model(self.unet)
            encs = [self.accelerator.unwrap_model(e) for e in m.text_encoders]
            pipe = m.pipeline(unet=unet, text_encoders=encs)
            for module in trainable_modules(m, cfg):
                module.eval()
            vae_was = next(m.vae.parameters()).device
            try:
                self._draw_samples(step, pipe, unet, encs, movable, note)
            except torch.OutOfMemoryError:
                if saved is None:  # samples during training: the run's own out-of-memory advice applies
                    raise
                note.append("skipped: out of memory")
                self.emit(Warning(f"the final samples did not fit in the GPU's memory and were skipped; the LoRA "
                                  f"is saved: {saved}. Preview it in the Preview tab (it loads the model on its own)."))
            finally:
                m.vae.to(vae_was)
                unet.to(self.device)
                del pipe
                release(self.device)  # the samples' activations go before training goes on
                for module in trainable_modules(m, cfg):
                    module.train()
        self.accelerator.wait_for_everyone()
        return note

    def _draw_samples(self, step: int, pipe, unet, encs, movable: bool, note: list) -> None:
        from lora_studio.core.io import write_with
        from lora_studio.core.training.memory import decode_apart, needs_vae_tiling, prompt_embeds, set_vae_tiling

        cfg, m = self.config, self.models
        m.vae.to(self.device)  # the memory plan: the VAE visits for the samples, tiled where the card is short
        set_vae_tiling(m.vae, needs_vae_tiling(cfg.resolution, self.device, unet if movable else None))
        prompt = self.validation_embeds
        if prompt is None:
            with self.accelerator.autocast():
                prompt = prompt_embeds(m, [cfg.validation_prompt], self.device, encs, note, movable)
        for i in range(cfg.num_validation_images):
            gen = torch.Generator("cpu").manual_seed(cfg.seed + i)
            unet.to(self.device)
            with self.accelerator.autocast():
                image = pipe(**prompt, num_inference_steps=cfg.sample_steps, generator=gen,
                             height=cfg.resolution, width=cfg.resolution,
                             **decode_apart(m, self.device, cfg.resolution, note, movable)).images[0]
            path = self.output_dir / "samples" / f"step-{step:06d}-{i}.png"
            write_with(path, lambda tmp, im=image: im.save(tmp, format="PNG"))
            self.samples.append(str(path))
            self.emit(Sample(path=str(path), step=step, prompt=cfg.validation_prompt))

    def averaged(self):
        """The saved weights: the moving average where the run keeps one (checkpoints keep the live ones)."""
        import contextlib

        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def drop_training_state(self) -> None:
        """Training is over: the captured step, the optimizer with its state, the schedule and the gradients go, so
        the final samples find that room. Each was held more than once: by the run, by the captured step (Accel),
        by the schedule (the optimizer) and by accelerate (free_memory drops its own references)."""
        from lora_studio.core.training.memory import release

        if self.accel is not None:
            self.accel.end_step()
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        self.step_fn = self.optimizer = self.lr_scheduler = None
        self.accelerator.free_memory()
        release(self.device)

    def save_final(self, stopped: bool, t0: float, n_class: int) -> dict[str, Any]:
        cfg, acc = self.config, self.accelerator
        step = self.loss_history[-1][0] if self.loss_history else 0
        main_file = None
        if stopped and step > 0 and not str(self.last_checkpoint or "").endswith(f"checkpoint-{step}"):
            self.checkpoint(step, self.micro)  # save on stop: `--resume` continues exactly here
        with self.phase("save"), self.averaged():
            if acc.is_main_process:
                adapter = save_adapter(self.output_dir, self.models, cfg, extra={"step": step})
                main_file = self.write_main_file(adapter, step)
            acc.wait_for_everyone()
        if not stopped and cfg.validation_prompt:
            # After the save: the LoRA is on disk whatever the samples do.
            with self.phase("samples") as note:
                self.drop_training_state()
                with self.averaged():
                    note.extend(self.make_samples(step, main_file))
        result = {
            "lora_path": main_file,  # the one file every webui reads: named first
            "output_dir": str(self.output_dir),
            "adapter_path": str(self.output_dir / ADAPTER_FILE),
            "kohya_path": main_file,
            "config_path": str(self.output_dir / "config.toml"),
            "family": self.models.family,
            "rank": cfg.rank,
            "alpha": cfg.alpha,
            "steps": step,
            "total_steps": cfg.max_train_steps,
            "stopped": stopped,
            "final_loss": self.loss_history[-1][1] if self.loss_history else None,
            "loss_history": self.loss_history,
            "checkpoint": self.last_checkpoint,
            "samples": self.samples,
            "class_images": n_class,
            "num_processes": acc.num_processes,
            "elapsed_s": time.perf_counter() - t0,
            "fast_path": self.fast_path_stats(),
            "int8_base_saved_bytes": self.int8_saved_bytes,
        }
        self.emit(Finished(result))
        return result

    def fast_path_stats(self) -> dict[str, Any]:
        """The fast path's record for the result (`Accel.stats`), or why the run had none."""
        if self.accel is None:
            return {"active": False, "reason": getattr(self, "fast_reason", None)}
        return self.accel.stats()

    def write_main_file(self, adapter: Path, step: int) -> str:
        """``<output_dir>/<run name>.safetensors``: the kohya layout (LyCORIS' for LoHa / LoKr) with alpha
        tensors and the metadata of what was trained, read at the intended strength by A1111/Forge, ComfyUI,
        InvokeAI and diffusers' load_lora_weights alike."""
        from lora_studio.core.lora_files import export_kohya
        from lora_studio.core.lora_files.metadata import training_metadata

        out = self.output_dir / f"{self.output_dir.resolve().name or 'lora'}.safetensors"
        meta = training_metadata(self.config, getattr(self, "examples", []), steps=step,
                                 started_at=getattr(self, "started_at", time.time()), finished_at=time.time(),
                                 base_facts=self.base_facts.result() if self.base_facts is not None else None)
        export_kohya(adapter, out, family=self.models.family, alpha=self.config.alpha,
                     unet_config=dict(self.models.unet.config), extra_metadata=meta)
        return str(out)

    def finish_early(self, t0: float, why: str) -> dict[str, Any]:
        result = {"lora_path": None, "output_dir": str(self.output_dir), "adapter_path": None, "kohya_path": None,
                  "stopped": True,
                  "steps": 0, "total_steps": self.config.max_train_steps, "loss_history": [], "final_loss": None,
                  "checkpoint": None, "samples": [], "family": self.models.family, "rank": self.config.rank,
                  "alpha": self.config.alpha, "elapsed_s": time.perf_counter() - t0, "note": why,
                  "config_path": str(self.output_dir / "config.toml"), "class_images": 0,
                  "num_processes": self.accelerator.num_processes}
        self.emit(Finished(result))
        return result

    def close(self):
        acc = self.accelerator
        if acc is None:
            return
        # The preview after the run (same process in the app) finds the card empty: drop the run's tensors.
        for name in ("models", "unet", "trained_encoders", "optimizer", "lr_scheduler", "step_fn", "batches",
                     "params", "accel"):
            if hasattr(self, name):
                setattr(self, name, None)
        from lora_studio.core.training.memory import release

        release(self.device)
        if self.tensorboard:
            acc.end_training()
        if acc.num_processes == 1:
            # Accelerate keeps process-wide singletons; a later run in this process may use other settings.
            from accelerate.state import AcceleratorState, GradientState

            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
