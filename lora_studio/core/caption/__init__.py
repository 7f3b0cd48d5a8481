"""Captions at scale: draft captions with a local model, edit comma tags, keep the trigger word in.

Public API (import from ``lora_studio.core.caption``; torch, transformers and onnxruntime load only when a
captioner is made):
- ``load_captioner(model, *, general_threshold=0.35, character_threshold=0.85, device=None, prompt=None,
  offline=None) -> Captioner``: ``"demo"`` (the demo world's judge names colour and shape: "a red circle"),
  a folder with ``model.onnx`` + ``selected_tags.csv`` (WD14 / WD v3 booru tagger, onnxruntime), a folder
  with ``config.json`` (BLIP / BLIP-2 / GIT / Florence-2 through transformers), or a Hugging Face repo id
  (fetched once into the cache; offline it raises LoraStudioError saying what to do).
- ``Captioner.caption(images) -> list[str]``; ``.name``, ``.batch_size``.
- ``MODES`` = empty | overwrite | append | prepend; ``final_caption(old, draft, mode, trigger)``.
- ``to_draft(ds, mode, items=None)``: indices the model must look at; ``draft(ds, captioner, indices, emit,
  stop)`` yields {index: text} per batch with Started/Progress/Warning events (phase "caption");
  ``plan(ds, drafts, mode, trigger, items=None) -> [(index, old, new)]``.
- ``caption_folder(path, model, mode, trigger, emit, stop, **options) -> dict``: the CLI's whole job.
- ``draft_all(ds, model, indices, emit, stop, **options) -> {index: text}``: the GUI worker's job; ``scope(ds, items)``:
  the items whose caption can be rewritten.
- Tags: ``split_tags``, ``tag_counts``, ``rename_tag``, ``remove_tag``, ``add_tag`` (tags.py).
"""

from .base import MODES, Captioner, final_caption
from .load import load_captioner
from .run import caption_folder, draft, draft_all, plan, scope, to_draft
from .tags import add_tag, remove_tag, rename_tag, split_tags, tag_counts

__all__ = ["MODES", "Captioner", "add_tag", "caption_folder", "draft", "draft_all", "final_caption", "load_captioner",
           "plan", "remove_tag", "rename_tag", "scope", "split_tags", "tag_counts", "to_draft"]
