"""Captioning a dataset: which pictures get a draft, the drafts batch by batch, the captions they make.

``caption_folder`` is the whole job for the CLI (it writes batch by batch, so a long run keeps its work);
the GUI runs ``draft`` on a worker thread and applies ``plan`` on the GUI thread as one undo step.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Sequence

from lora_studio.core import events as ev
from lora_studio.core.caption.base import Captioner, check_mode, final_caption
from lora_studio.errors import LoraStudioError, describe

PHASE = "caption"


def scope(ds, items: Sequence[int] | None = None) -> list[int]:
    """The items a job may touch: the given ones (or all) whose caption can be rewritten."""
    indices = range(len(ds)) if items is None else items
    return [i for i in indices if ds[i].caption_source is None or ds[i].caption_readable]


def to_draft(ds, mode: str, items: Sequence[int] | None = None) -> list[int]:
    """The items the model must look at: in ``empty`` mode only those without a caption."""
    check_mode(mode)
    return [i for i in scope(ds, items) if mode != "empty" or not ds[i].has_caption]


def draft(ds, captioner: Captioner, indices: Sequence[int], emit: Callable = None,
          stop: Callable[[], bool] | None = None) -> Iterator[dict[int, str]]:
    """Yields {index: drafted text} batch by batch; a picture that cannot be read is skipped with a Warning."""
    from lora_studio.core.dataset import load_training_image

    emit = emit or (lambda e: None)
    total, done, t0 = len(indices), 0, time.perf_counter()
    emit(ev.Started(total_steps=total, phase=PHASE, description=captioner.name))
    size = max(1, captioner.batch_size)
    for start in range(0, total, size):
        if stop is not None and stop():
            return
        batch = list(indices[start:start + size])
        images, kept = [], []
        for i in batch:
            try:
                images.append(load_training_image(ds[i].path))
                kept.append(i)
            except LoraStudioError as exc:
                message, advice = describe(exc)
                emit(ev.Warning(f"{ds[i].name}: skipped, {message} {advice}"))
        texts = captioner.caption(images) if images else []
        done += len(batch)
        rate = done / max(time.perf_counter() - t0, 1e-9)
        emit(ev.Progress(step=done, total=total, it_per_s=rate, eta_s=(total - done) / rate, phase=PHASE))
        yield dict(zip(kept, texts))


def plan(ds, drafts: dict[int, str], mode: str, trigger: str = "",
         items: Sequence[int] | None = None) -> list[tuple[int, str, str]]:
    """(index, old, new) for every item in scope whose caption changes (drafts merged, trigger put in)."""
    check_mode(mode)
    changes = []
    for i in scope(ds, items):
        old = ds[i].caption
        new = final_caption(old, drafts.get(i), mode, trigger)
        if new != old:
            changes.append((i, old, new))
    return changes


def caption_folder(path, model: str, mode: str = "empty", trigger: str = "", emit: Callable = None,
                   stop: Callable[[], bool] | None = None, **options) -> dict:
    """Draft and save the captions of a dataset folder; returns {"changed", "drafted", "stopped", "seconds"}."""
    from lora_studio.core.caption.load import load_captioner
    from lora_studio.core.dataset import Dataset

    emit = emit or (lambda e: None)
    t0 = time.perf_counter()
    check_mode(mode)
    ds = Dataset.open(path)
    if len(ds) == 0:
        raise LoraStudioError(f"{ds.root}: no images found.", "give the folder that holds the training images.")
    captioner = load_captioner(model, **options)
    indices = to_draft(ds, mode)
    changed = drafted = 0
    for drafts in draft(ds, captioner, indices, emit, stop):
        drafted += len(drafts)
        changed += len(ds.set_captions([(i, new) for i, _, new in plan(ds, drafts, mode, trigger, list(drafts))]))
    stopped = bool(stop and stop())
    if trigger.strip() and not stopped:  # captions the model did not look at still get the trigger
        rest = sorted(set(scope(ds)) - set(indices))
        changed += len(ds.set_captions([(i, new) for i, _, new in plan(ds, {}, mode, trigger, rest)]))
    result = {"changed": changed, "drafted": drafted, "stopped": stopped, "images": len(ds),
              "seconds": time.perf_counter() - t0}
    emit(ev.Finished(result))
    return result


def draft_all(ds, model: str, indices: Sequence[int], emit: Callable = None, stop: Callable[[], bool] | None = None,
              **options) -> dict[int, str]:
    """Load the captioner and draft every item in ``indices`` (until stopped): the GUI worker's job."""
    from lora_studio.core.caption.load import load_captioner

    captioner = load_captioner(model, **options)
    drafts: dict[int, str] = {}
    for batch in draft(ds, captioner, indices, emit, stop):
        drafts.update(batch)
    return drafts
