"""Dataset layer: scan folders, read/write captions, validate images, plan aspect-ratio buckets.

Public API (import from ``lora_studio.core.dataset``):

Scanning and captions
- ``scan(root) -> list[Path]``: images under ``root`` (jpg/jpeg/png/webp/bmp/tif/tiff, any case), recursive,
  natural sort order; hidden files/folders and temporary files skipped.
- ``Dataset.open(path) -> Dataset`` (raises LoraStudioError for a missing path / non-folder).
  ``ds.root``, ``ds.items: list[DatasetItem]``, ``len(ds)``, ``ds[i]``, iteration,
  ``ds.problems`` (folder/metadata problems), ``ds.all_problems()``, ``ds.caption_format``
  ("sidecar"|"metadata"|"folder"|"none"), ``ds.sidecar_extension`` (".txt" or ".caption"), ``ds.reload()``.
  ``ds.set_caption(index_or_item, text)``: writes at once, atomically, in the format the folder uses
  (sidecar rewrite; metadata.jsonl rewrite keeping other lines; otherwise a new sidecar).
  ``ds.set_captions([(index_or_item, text), ...]) -> changed indices`` (one rewrite per file).
  ``ds.add_trigger(token, where="prepend"|"append", items=None) -> int`` (idempotent).
  ``ds.find_replace(find, replace, items=None, regex=False, case_sensitive=True) -> int``.
  ``ds.caption_listeners``: callables ``f(index)`` run after a caption was saved.
  ``ds.caption_signature(i)`` / ``item.caption_stamp`` / ``ds.changed_on_disk() -> [index]``: external edits.
- ``DatasetItem``: ``path`` (absolute), ``name`` (relative, posix), ``caption`` (exact text, "" if none),
  ``prompt`` (caption stripped), ``caption_source`` ("sidecar"|"metadata"|"folder"|None), ``caption_path``,
  ``repeats`` (from kohya ``N_token class`` folders, else 1), ``size`` (lazy (w, h) after EXIF rotation, or
  None), ``problems: list[Problem]``, ``has_caption``, ``caption_readable``, ``errors``.
- ``Problem(severity, kind, file, message, advice, category)``; ``ERROR``/``WARNING``.
"""

from .dataset import Dataset, DatasetItem, image_size
from .problems import ERROR, WARNING, Problem
from .scan import CAPTION_EXTENSIONS, IMAGE_EXTENSIONS, METADATA_NAME, scan

__all__ = [
    "CAPTION_EXTENSIONS", "ERROR", "IMAGE_EXTENSIONS", "METADATA_NAME", "WARNING",
    "Dataset", "DatasetItem", "Problem", "image_size", "scan",
]
