"""Dataset layer: scan folders, read/write captions, validate images, plan aspect-ratio buckets.

Public API (import from ``lora_studio.core.dataset``):

Scanning and captions
- ``scan(root) -> list[Path]``: images under ``root`` (jpg/jpeg/png/webp/bmp/tif/tiff, any case), recursive,
  natural sort order; hidden files/folders and temporary files skipped.
- ``Dataset.open(path) -> Dataset`` (raises LoraStudioError for a missing path / non-folder).
  ``ds.root``, ``ds.items: list[DatasetItem]``, ``len(ds)``, ``ds[i]``, iteration,
  ``ds.problems`` (folder/metadata problems), ``ds.all_problems()``, ``ds.index_of(name)``,
  ``ds.caption_format``
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
- ``Problem(severity, kind, file, message, advice, category)``; ``ERROR``/``WARNING``. ``file`` is relative
  to the dataset folder; ``kind`` is a stable code (see validate.py / captions.py).

Validation and the pre-flight check (nothing is written)
- ``check_image(path, name=None, buckets=None) -> (problems, upright (w, h) or None)``: opens the image for
  real (verify + load). Errors: unreadable, truncated, decompression_bomb. Warnings: cmyk, 16bit,
  palette_transparency, alpha, exif_rotation, animated, too_small (needs ``buckets``).
- ``iter_validate(ds, buckets=None)`` yields (index, problems) image by image (for generator workers);
  ``validate_dataset(ds, buckets=None, progress=None, stop=None) -> bool`` (False when stopped).
  Both put the image problems into ``item.problems`` (category "image") and fill ``item.size``.
- ``check_dataset(path, resolution=512, sdxl=False, *, no_upscale=False, min_side=None, max_side=None,
  progress=None, stop=None) -> CheckReport`` with ``problems``, ``errors``, ``warnings``, ``ok``,
  ``bucket_counts``, ``assignments``, ``caption_sources``, ``to_dict()``, ``format_text()``, ``dataset``.

Buckets
- ``make_buckets(resolution, sdxl=False, *, step=None, min_side=None, max_side=None, no_upscale=False) -> Buckets``
  (step 64, or 32 for SDXL; area budget resolution**2; sides default resolution/4 .. resolution*2).
  ``Buckets.sizes`` (sorted (w, h)), ``.assign((w, h)) -> (w, h)``, ``.plan(sizes) -> {bucket: count}``,
  ``.describe()``; ``upscale_factor(size, bucket)``.
- ``plan_buckets(model, resolution, *, enable_bucket=True, no_upscale=False, min_side=None, max_side=None)``
  and ``training_buckets(config)``: THE buckets training uses (step from the model: its VAE and UNet downscale).
  Training, ``dataset check --model`` and the Dataset tab's Bucket column all call these.

Trigger word (``lora_studio.core.dataset.trigger``)
- ``has_token`` / ``add_token(text, token, where)`` (whole word; ``Dataset.add_trigger`` uses it),
  ``check_config(config) -> TriggerCheck | None`` (``count``, ``total``, ``missing`` names, ``message()``),
  ``run_trigger(config)``, ``validation_prompt(config)`` (the trigger put in when missing).

Training-side helpers
- ``load_training_image(path) -> PIL.Image`` (RGB, EXIF-upright, first frame, 8-bit, transparency on white;
  raises LoraStudioError naming the file). ``to_rgb(pil_image)`` for an already opened image.
- ``resize_to_bucket(img, bucket, center_crop=True, rng=None, return_crop=False)``: cover then crop to
  exactly ``bucket`` (w, h); ``rng`` is random.Random or numpy Generator; ``return_crop`` adds (top, left)
  for SDXL's crop coordinates. ``crop_for_bucket(size, bucket, center_crop, rng)`` gives the numbers only.
- ``thumbnail(path, max_side=160) -> PIL.Image | None``: a safe, cheap preview for the caption grid.
"""

from .buckets import Buckets, make_buckets, plan_buckets, training_buckets, upscale_factor
from .check import CheckReport, check_dataset
from .dataset import Dataset, DatasetItem, image_size
from .images import crop_for_bucket, load_training_image, resize_to_bucket, thumbnail, to_rgb
from .problems import ERROR, WARNING, Problem
from .scan import CAPTION_EXTENSIONS, IMAGE_EXTENSIONS, METADATA_NAME, scan
from .validate import check_image, iter_validate, validate_dataset

__all__ = [
    "CAPTION_EXTENSIONS", "ERROR", "IMAGE_EXTENSIONS", "METADATA_NAME", "WARNING",
    "Buckets", "CheckReport", "Dataset", "DatasetItem", "Problem",
    "check_dataset", "check_image", "crop_for_bucket", "image_size", "iter_validate", "load_training_image",
    "make_buckets", "plan_buckets", "resize_to_bucket", "training_buckets", "scan", "thumbnail", "to_rgb", "upscale_factor", "validate_dataset",
]
