"""The dataset as a plain Python object: items, captions, caption edits written at once.

This is the source of truth the GUI's table model wraps; the CLI and training read it too.
"""

from __future__ import annotations

import os
import posixpath
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from lora_studio.core.locks import folder_lock
from lora_studio.errors import LoraStudioError

from . import captions as cap
from .problems import ERROR, WARNING, Problem
from .scan import CAPTION_EXTENSIONS, METADATA_NAME, is_image_name, natural_key, walk

SIDECAR, METADATA, FOLDER = "sidecar", "metadata", "folder"


@dataclass(eq=False)
class DatasetItem:
    path: Path  # absolute
    name: str  # relative to the dataset folder, posix separators
    caption: str = ""  # exactly as stored (no stripping); "" when there is none
    caption_source: str | None = None  # "sidecar", "metadata", "folder" or None
    caption_path: Path | None = None  # sidecar file or metadata.jsonl the caption came from
    repeats: int = 1
    problems: list[Problem] = field(default_factory=list)
    caption_stamp: tuple[int, int] | None = None  # (mtime_ns, size) of caption_path when read
    _size: tuple[int, int] | None = field(default=None, repr=False)
    _size_read: bool = field(default=False, repr=False)

    @property
    def prompt(self) -> str:
        """The caption as training uses it: surrounding whitespace removed."""
        return self.caption.strip()

    @property
    def has_caption(self) -> bool:
        return self.caption_source is not None and bool(self.caption.strip())

    @property
    def caption_readable(self) -> bool:
        return not any(p.kind in ("not_utf8", "caption_unreadable", "caption_too_large") for p in self.problems
                       if p.category == "caption")

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) as training sees it (after EXIF rotation); None if unreadable. Read lazily, header only."""
        if not self._size_read:
            self._size = image_size(self.path)
            self._size_read = True
        return self._size

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]


def image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                try:
                    orientation = im.getexif().get(0x0112, 1)
                except Exception:  # a broken EXIF block: the size is still right
                    orientation = 1
    except Exception:
        return None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


class Dataset:
    """A dataset folder. ``Dataset.open(path)``; ``items``; ``set_caption``; ``reload``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self.items: list[DatasetItem] = []
        self.problems: list[Problem] = []  # about the folder, metadata files and folder names
        self.metadata: dict[str, cap.MetadataFile] = {}  # rel dir -> metadata.jsonl there
        self.sidecar_extension = ".txt"
        # Called with the item's index after its caption changed on disk (the GUI emits dataChanged).
        self.caption_listeners: list[Callable[[int], None]] = []
        self.reload()

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Dataset":
        root = Path(path)
        if not root.exists():
            raise LoraStudioError(f"dataset folder {root} does not exist.", "check the path.")
        if not root.is_dir():
            raise LoraStudioError(f"{root} is not a folder.", "give the folder that holds the training images.")
        return cls(root)

    # ------------------------------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[DatasetItem]:
        return iter(self.items)

    def __getitem__(self, index: int) -> DatasetItem:
        return self.items[index]

    def index_of(self, name: str) -> int:
        """Index of the item with this relative name (posix separators); ValueError if absent."""
        for i, item in enumerate(self.items):
            if item.name == name:
                return i
        raise ValueError(f"no image {name!r} in {self.root}")

    def uncaptioned(self) -> list[DatasetItem]:
        """Pictures with no caption text: a style run refuses them (preflight), the Dataset tab counts them."""
        return [item for item in self.items if not item.prompt]

    def all_problems(self) -> list[Problem]:
        return self.problems + [p for item in self.items for p in item.problems]

    @property
    def caption_format(self) -> str:
        """The main caption format of the folder: "sidecar", "metadata", "folder" or "none"."""
        counts: dict[str, int] = {}
        for item in self.items:
            if item.caption_source:
                counts[item.caption_source] = counts.get(item.caption_source, 0) + 1
        return max(counts, key=lambda k: (counts[k], k == SIDECAR)) if counts else "none"

    def reload(self) -> None:
        """Scan the folder again: images, captions and their problems (image validation is separate).

        Caption priority, lowest first: the kohya folder name, the nearest metadata.jsonl that names the image,
        a sidecar file (``.txt`` before ``.caption``). Conflicts and shared sidecars are warnings, never errors."""
        root = self.root
        listing, images, metadata, problems = _scan(root)
        sidecar_counts = {ext: 0 for ext in CAPTION_EXTENSIONS}
        stems_seen: dict[tuple[str, str], str] = {}
        folder_problems_seen: set[tuple[str, str]] = set()
        items = []
        for rel, path in images:
            rel_dir = posixpath.dirname(rel)
            item = DatasetItem(path=path, name=rel)
            # folder name (lowest priority)
            repeats, folder_caption, _, fproblems = cap.kohya_folder(rel_dir)
            item.repeats = repeats
            for p in fproblems:
                if (p.kind, p.file) not in folder_problems_seen:
                    folder_problems_seen.add((p.kind, p.file))
                    problems.append(p)
            if folder_caption is not None:
                item.caption, item.caption_source = folder_caption, FOLDER
            # metadata.jsonl: the nearest one above the image that names it
            entry, meta = self._metadata_entry(metadata, rel)
            if entry is not None:
                item.caption, item.caption_source, item.caption_path = entry.text, METADATA, meta.path
                item.caption_stamp = meta.stamp
            # sidecars (highest priority)
            ext = _read_sidecars(item, root, listing.get(rel_dir, {}), entry, meta, stems_seen)
            if ext is not None:
                sidecar_counts[ext] += 1
            items.append(item)
        problems += _root_name_warning(root, items)
        self.sidecar_extension = ".caption" if sidecar_counts[".caption"] > sidecar_counts[".txt"] else ".txt"
        self.items, self.problems, self.metadata = items, problems, metadata

    @staticmethod
    def _metadata_entry(metadata: dict[str, cap.MetadataFile], rel: str):
        d = posixpath.dirname(rel)
        while True:
            meta = metadata.get(d)
            if meta is not None and rel in meta.entries:
                return meta.entries[rel], meta
            if not d:
                return None, None
            d = posixpath.dirname(d)

    def _governing_metadata(self, rel: str) -> cap.MetadataFile | None:
        d = posixpath.dirname(rel)
        while True:
            if d in self.metadata:
                return self.metadata[d]
            if not d:
                return None
            d = posixpath.dirname(d)

    # ------------------------------------------------------------------------------------------ writing
    def _item(self, index_or_item: int | DatasetItem) -> tuple[int, DatasetItem]:
        if isinstance(index_or_item, DatasetItem):
            for i, item in enumerate(self.items):
                if item is index_or_item:
                    return i, item
            raise LoraStudioError(f"{index_or_item.name} is not an item of the dataset {self.root}.",
                                  "reload the dataset.")
        return index_or_item, self.items[index_or_item]

    def set_caption(self, index_or_item: int | DatasetItem, text: str) -> None:
        """Save one caption now, atomically, in the format the folder already uses."""
        self.set_captions([(index_or_item, text)])

    def set_captions(self, changes: Iterable[tuple[int | DatasetItem, str]]) -> list[int]:
        """Save several captions (one atomic rewrite per file). Returns the indices that changed."""
        plan: list[tuple[int, DatasetItem, str]] = []
        for key, text in changes:
            if not isinstance(text, str):
                raise TypeError("a caption is a str")
            i, item = self._item(key)
            if item.caption_source is not None and not item.caption_readable:
                raise LoraStudioError(f"the caption file {item.caption_path} is not readable as UTF-8 text, so "
                                      "LoRA Studio will not overwrite it.", cap._RESAVE)
            if item.caption_source is not None and text == item.caption:
                continue
            if item.caption_source is None and text == "":
                continue
            plan.append((i, item, text))
        by_meta: dict[Path, list[tuple[int, DatasetItem, str]]] = {}
        sidecars: dict[Path, tuple[int, DatasetItem, str]] = {}
        for i, item, text in plan:
            if item.caption_source in (SIDECAR, METADATA):
                target, how = item.caption_path, item.caption_source
            else:
                meta = self._governing_metadata(item.name)
                if meta is not None:
                    target, how = meta.path, METADATA
                else:
                    target, how = item.path.with_name(item.path.stem + self.sidecar_extension), SIDECAR
            if how == METADATA:
                meta = self._metadata_at(target)
                if meta is not None and not meta.readable:
                    raise LoraStudioError(f"{target} could not be read, so LoRA Studio will not rewrite it.",
                                          "fix the problem reported for that file, then reload the dataset.")
                by_meta.setdefault(target, []).append((i, item, text))
            else:
                sidecars[target] = (i, item, text)
        changed: list[int] = []
        try:
            # Another window or process may write this dataset too: metadata.jsonl rewrites re-read the
            # file, and the lock keeps two read-modify-write cycles from interleaving.
            with folder_lock(self.root):
                self._write_sidecars(sidecars, changed)
                for path, batch in by_meta.items():
                    self._write_metadata(path, batch, changed)
        finally:  # listeners hear of every caption that did land, even when a later write failed
            changed = sorted(set(changed))
            for i in changed:
                for listener in self.caption_listeners:
                    listener(i)
        return changed

    def _write_sidecars(self, jobs: dict[Path, tuple[int, DatasetItem, str]], changed: list[int]) -> None:
        if not jobs:
            return
        stems = self._stem_index()

        def landed(target: Path) -> None:
            i, item, text = jobs[target]
            for j in stems[(item.path.parent, item.path.stem.lower())]:  # a.png and a.jpg both read a.txt
                self._written(self.items[j], text, SIDECAR, target)
                changed.append(j)

        if len(jobs) == 1:
            (target, (_, _, text)), = jobs.items()
            cap.write_sidecar(target, text)
            landed(target)
            return
        # Each write is atomic and fsynced; in parallel the disk batches the syncs (many times faster).
        from concurrent.futures import ThreadPoolExecutor

        first_error = None
        with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
            futures = {pool.submit(cap.write_sidecar, target, job[2]): target for target, job in jobs.items()}
            for future, target in futures.items():
                try:
                    future.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after recording what landed
                    first_error = first_error or exc
                else:
                    landed(target)
        if first_error is not None:
            raise first_error

    def _write_metadata(self, path: Path, batch: list[tuple[int, DatasetItem, str]], changed: list[int]) -> None:
        meta = self._metadata_at(path)
        old_stamp = meta.stamp if meta is not None else None
        cap.write_metadata(path, self.root, {item.name: text for _, item, text in batch})
        new_stamp = cap.stamp(path)
        if meta is not None:
            meta.stamp = new_stamp
        for other in self.items:  # our own write must not look like an outside edit
            if other.caption_path == path and other.caption_stamp == old_stamp:
                other.caption_stamp = new_stamp
        for i, item, text in batch:
            self._written(item, text, METADATA, path)
            changed.append(i)

    def _stem_index(self) -> dict[tuple[Path, str], list[int]]:
        index: dict[tuple[Path, str], list[int]] = {}
        for j, o in enumerate(self.items):
            index.setdefault((o.path.parent, o.path.stem.lower()), []).append(j)
        return index

    def _metadata_at(self, path: Path) -> cap.MetadataFile | None:
        return next((m for m in self.metadata.values() if m.path == path), None)

    def _written(self, item: DatasetItem, text: str, how: str, target: Path) -> None:
        item.caption, item.caption_source, item.caption_path = text, how, target
        item.caption_stamp = cap.stamp(target)
        item.problems = [p for p in item.problems if p.category != "caption" or p.kind == "shared_caption"]
        if not text.strip():
            where = item.name if how == METADATA else target.relative_to(self.root).as_posix()
            item.problems.append(Problem(WARNING, "empty_caption", where, "empty caption", "write a caption",
                                         "caption"))

    def _targets(self, items: Sequence[int | DatasetItem] | None) -> list[DatasetItem]:
        if items is None:
            return list(self.items)
        return [self._item(k)[1] for k in items]

    def add_trigger(self, token: str, where: str = "prepend", items: Sequence[int | DatasetItem] | None = None,
                    separator: str = ", ") -> int:
        """Put ``token`` at the start ("prepend") or end ("append") of each caption that lacks it.

        Idempotent: a caption already holding the token as a whole word is left alone. Returns how many
        captions changed.
        """
        token = token.strip()
        if not token:
            raise LoraStudioError("the trigger token is empty.", "type a token, e.g. 'sks'.")
        if where not in ("prepend", "append"):
            raise ValueError("where must be 'prepend' or 'append'")
        from .trigger import add_token

        changes = []
        for item in self._targets(items):
            if item.caption_source is not None and not item.caption_readable:
                continue
            new = add_token(item.caption, token, where, separator)
            if new != item.caption:
                changes.append((item, new))
        return len(self.set_captions(changes))

    def find_replace(self, find: str, replace: str, items: Sequence[int | DatasetItem] | None = None,
                     regex: bool = False, case_sensitive: bool = True) -> int:
        """Replace ``find`` in every caption (literal text, or a Python regex). Returns how many changed."""
        if not find:
            raise LoraStudioError("the text to find is empty.", "type the text to find.")
        flags = 0 if case_sensitive else re.IGNORECASE
        try:
            pattern = re.compile(find if regex else re.escape(find), flags)
        except re.error as exc:
            raise LoraStudioError(f"the regular expression {find!r} is invalid: {exc}.",
                                  "fix the expression, or turn off 'regular expression'.") from exc
        changes = []
        for item in self._targets(items):
            if item.caption_source is None or not item.caption_readable:
                continue
            try:
                new = pattern.sub(replace if regex else replace.replace("\\", "\\\\"), item.caption)
            except (re.error, IndexError) as exc:
                raise LoraStudioError(f"the replacement {replace!r} is invalid: {exc}.",
                                      "use \\1 or \\g<name> only for groups the expression has.") from exc
            if new != item.caption:
                changes.append((item, new))
        return len(self.set_captions(changes))

    # --------------------------------------------------------------------------------- external edits
    def caption_signature(self, index_or_item: int | DatasetItem) -> tuple[int, int] | None:
        """The caption file's current (mtime_ns, size); compare with ``item.caption_stamp``."""
        return cap.stamp(self._item(index_or_item)[1].caption_path)

    def changed_on_disk(self) -> list[int]:
        """Indices of items whose caption file changed since it was read or written here."""
        return [i for i, item in enumerate(self.items)
                if item.caption_path is not None and cap.stamp(item.caption_path) != item.caption_stamp]


def _scan(root: Path):
    """(listing: rel dir -> {lower name: real name}, images [(rel, path)] in natural order, metadata files by
    rel dir, problems of the metadata files, including lines that name no image)."""
    listing: dict[str, dict[str, str]] = {}
    images: list[tuple[str, Path]] = []
    problems: list[Problem] = []
    metadata: dict[str, cap.MetadataFile] = {}
    for d, files in walk(root):
        rel_dir = d.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        listing[rel_dir] = {f.lower(): f for f in files}
        for f in files:
            if is_image_name(f):
                images.append((posixpath.join(rel_dir, f) if rel_dir else f, d / f))
            elif f.lower() == METADATA_NAME:
                meta = cap.read_metadata(d / f, root)
                metadata[rel_dir] = meta
                problems += meta.problems
    images.sort(key=lambda t: natural_key(t[0]))
    names = {rel for rel, _ in images}
    for meta in metadata.values():
        for image_rel, entry in meta.entries.items():
            if image_rel not in names:
                problems.append(Problem(WARNING, "metadata_no_image", meta.rel,
                                        f"line {entry.line}: no image {image_rel!r} in the dataset; the line is "
                                        "unused", "fix the file name or remove the line", "metadata"))
    return listing, images, metadata, problems


def _read_sidecars(item, root: Path, files: dict[str, str], entry, meta, stems_seen: dict) -> str | None:
    """Give `item` its sidecar caption (the first of CAPTION_EXTENSIONS found) and the sidecars' problems;
    returns the extension used, or None when the image has no sidecar."""
    rel = item.name
    rel_dir = posixpath.dirname(rel)
    stem = os.path.splitext(posixpath.basename(rel))[0]
    found = [(ext, files[(stem + ext).lower()]) for ext in CAPTION_EXTENSIONS if (stem + ext).lower() in files]
    texts = []
    for ext, fname in found:
        srel = posixpath.join(rel_dir, fname) if rel_dir else fname
        text, sproblems = cap.read_sidecar(root / rel_dir / fname, srel)
        item.problems += sproblems
        texts.append((srel, text))
        key = (rel_dir, srel)
        if key in stems_seen:
            item.problems.append(Problem(WARNING, "shared_caption", rel,
                                         f"shares its caption file {srel} with {stems_seen[key]}; editing one "
                                         "changes both", "rename one of the two images (and give it its own "
                                         "caption file)", "caption"))
        stems_seen[key] = rel
    if not found:
        return None
    ext, fname = found[0]
    srel, text = texts[0]
    if entry is not None and text is not None and text.strip() != entry.text.strip():
        item.problems.append(Problem(WARNING, "caption_conflict", rel,
                                     f"{srel} and {meta.rel} line {entry.line} give different captions; "
                                     f"{srel} is used", "remove the caption you don't want", "caption"))
    if len(texts) > 1 and texts[1][1] is not None and text is not None and texts[1][1].strip() != text.strip():
        item.problems.append(Problem(WARNING, "caption_conflict", rel,
                                     f"{srel} and {texts[1][0]} give different captions; {srel} is used",
                                     f"delete {texts[1][0]} or merge the two", "caption"))
    item.caption = text if text is not None else ""
    item.caption_source, item.caption_path = SIDECAR, root / rel_dir / fname
    item.caption_stamp = cap.stamp(item.caption_path)
    return ext


def _root_name_warning(root: Path, items) -> list[Problem]:
    """A dataset folder named like a kohya folder: its own name is not read (only its subfolders')."""
    root_match = re.match(r"^(\d+)_(.+)$", root.name)
    if not root_match or all(item.caption_source is not None for item in items):
        return []
    return [Problem(WARNING, "folder_name", "", f"the dataset folder itself is named like a kohya "
                    f"folder ({root.name!r}), but only its subfolders' names are read",
                    f"to use repeats {root_match.group(1)} and caption {root_match.group(2)!r}, "
                    "choose the folder above it", "folder")]
