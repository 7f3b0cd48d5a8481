"""Caption sources on disk: sidecar files, metadata.jsonl, kohya ``N_token class`` folder names.

Reading never changes a file. Writing is atomic (lora_studio.core.io) and keeps everything the user
did not ask to change: other metadata lines byte for byte, unknown keys, key order, line endings.
"""

from __future__ import annotations

import codecs
import functools
import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from lora_studio.core import io
from lora_studio.errors import LoraStudioError

from .problems import ERROR, WARNING, Problem

MAX_CAPTION_CHARS = 64 * 1024  # a caption is a prompt (CLIP reads 77 tokens); more is a mistake
MAX_METADATA_BYTES = 256 * 1024 * 1024
_KOHYA_DIR = re.compile(r"^(\d+)_(.*)$")
_RESAVE = "open it in a text editor and save it with the encoding 'UTF-8', then reload the dataset"


def stamp(path: Path | None) -> tuple[int, int] | None:
    """A cheap signature (mtime_ns, size) of a caption file, to notice edits made outside the app."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def decode_text(data: bytes, rel: str, category: str = "caption") -> tuple[str | None, list[Problem]]:
    """UTF-8 text of a caption file, or None with an error when it is not UTF-8 (never guessed)."""
    problems: list[Problem] = []
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
        problems.append(Problem(WARNING, "bom", rel, "starts with a byte-order mark (BOM); read fine",
                                "nothing to do: LoRA Studio leaves the BOM out when it saves this file", category))
    try:
        return data.decode("utf-8"), problems
    except UnicodeDecodeError as exc:
        problems.append(Problem(ERROR, "not_utf8", rel,
                                f"is not UTF-8 text (bad byte at offset {exc.start}); it is not used and "
                                "LoRA Studio will not overwrite it", _RESAVE, category))
        return None, problems


def read_sidecar(path: Path, rel: str) -> tuple[str | None, list[Problem]]:
    try:
        size = path.stat().st_size
        if size > MAX_CAPTION_CHARS * 4:
            return None, [Problem(ERROR, "caption_too_large", rel, f"is {size} bytes, too large for a caption",
                                  "a caption is a short prompt; check that this is the right file", "caption")]
        data = path.read_bytes()
    except OSError as exc:
        return None, [Problem(ERROR, "caption_unreadable", rel, f"cannot be read ({exc.strerror or exc})",
                              "check the file's permissions", "caption")]
    text, problems = decode_text(data, rel)
    if text is not None and not text.strip():
        problems.append(Problem(WARNING, "empty_caption", rel, "empty caption",
                                "write a caption, or delete the file if the image should have none", "caption"))
    return text, problems


def write_sidecar(path: Path, text: str) -> None:
    io.write_text(path, text)  # UTF-8, no BOM, the user's own line endings


# ----------------------------------------------------------------------------------------------- kohya
def kohya_folder(rel_dir: str) -> tuple[int, str | None, str | None, list[Problem]]:
    """(repeats, caption, folder, problems) from the nearest ``N_token class`` folder in ``rel_dir``."""
    parts = [p for p in rel_dir.split("/") if p and p != "."]
    for i in range(len(parts) - 1, -1, -1):
        m = _KOHYA_DIR.match(parts[i])
        if not m:
            continue
        folder = "/".join(parts[: i + 1])
        repeats, caption = int(m.group(1)), m.group(2).strip()
        problems = []
        if repeats == 0:
            problems.append(Problem(WARNING, "folder_repeats", folder, "folder name asks for 0 repeats; "
                                    "its images are used once per epoch",
                                    "rename the folder to '1_...' or more, or move it out of the dataset", "folder"))
            repeats = 1
        if repeats > 10000:
            problems.append(Problem(WARNING, "folder_repeats", folder, f"folder name asks for {repeats} repeats; "
                                    "capped at 10000", "use a smaller number in the folder name", "folder"))
            repeats = 10000
        if not caption:
            problems.append(Problem(WARNING, "folder_name", folder, "folder name has repeats but no 'token class' "
                                    "part, so it gives no caption", "rename it like '10_sks dog'", "folder"))
            caption = None
        return repeats, caption, folder, problems
    return 1, None, None, []


# -------------------------------------------------------------------------------------- metadata.jsonl
@dataclass
class MetadataEntry:
    text: str
    line: int  # 1-based
    key: str  # "text" or "caption"


@dataclass
class MetadataFile:
    path: Path
    rel: str  # of the metadata file, relative to the dataset root
    rel_dir: str  # its folder relative to the dataset root ("" for the root)
    entries: dict[str, MetadataEntry] = field(default_factory=dict)  # image rel path -> entry
    problems: list[Problem] = field(default_factory=list)
    readable: bool = True
    stamp: tuple[int, int] | None = None


@functools.lru_cache(maxsize=64)
def _real(root: Path) -> str:
    return str(root.resolve())


def _outside(root: Path, rel: str, follow_links: bool) -> bool:
    if rel == ".." or rel.startswith("../") or rel.startswith("/"):
        return True
    if not follow_links:
        return False
    try:  # a link inside the folder may still lead out of it
        real_root = _real(root)
        return os.path.commonpath([real_root, str((root / rel).resolve())]) != real_root
    except (OSError, ValueError):
        return True


def resolve_file_name(root: Path, rel_dir: str, file_name: str, follow_links: bool = True) -> tuple[str | None, str]:
    """(image path relative to root, or None when it points outside the dataset; normalised name)."""
    name = file_name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None, name
    rel = posixpath.normpath(posixpath.join(rel_dir, name)) if rel_dir else posixpath.normpath(name)
    if _outside(root, rel, follow_links):
        return None, rel
    return rel, rel


def _split_lines(text: str) -> list[str]:
    # Only "\n" ends a JSON line: JSON strings may legally hold U+2028 and friends that splitlines() splits on.
    return text.split("\n")


def read_metadata(path: Path, root: Path) -> MetadataFile:
    rel = path.relative_to(root).as_posix()
    rel_dir = posixpath.dirname(rel)
    meta = MetadataFile(path=path, rel=rel, rel_dir=rel_dir, stamp=stamp(path))
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            meta.readable = False
            meta.problems.append(Problem(ERROR, "metadata_too_large", rel, f"is larger than "
                                         f"{MAX_METADATA_BYTES // 2**20} MiB; it is not read",
                                         "check that this is a caption file; split the dataset", "metadata"))
            return meta
        data = path.read_bytes()
    except OSError as exc:
        meta.readable = False
        meta.problems.append(Problem(ERROR, "metadata_unreadable", rel, f"cannot be read ({exc.strerror or exc})",
                                     "check the file's permissions", "metadata"))
        return meta
    text, problems = decode_text(data, rel, "metadata")
    meta.problems += problems
    if text is None:
        meta.readable = False
        return meta
    for number, raw in enumerate(_split_lines(text), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        where = f"{rel} line {number}"

        def bad(kind: str, message: str, advice: str) -> None:
            meta.problems.append(Problem(ERROR, kind, rel, f"line {number}: {message}", advice, "metadata"))

        if len(line) > MAX_CAPTION_CHARS + 4096:
            bad("metadata_line_too_large", f"is {len(line)} characters long, too large for a caption; it is ignored",
                f"shorten or remove {where}")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            bad("metadata_malformed", f"is not valid JSON ({exc.msg} at column {exc.colno}); it is ignored",
                f"fix {where}: each line must be one JSON object like "
                '{"file_name": "a.png", "text": "a caption"}')
            continue
        if not isinstance(obj, dict):
            bad("metadata_malformed", "is not a JSON object; it is ignored", f"fix {where}")
            continue
        file_name = obj.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            bad("metadata_missing_file_name", "has no 'file_name'; it is ignored",
                f"add \"file_name\": \"<image file>\" to {where}")
            continue
        key = "text" if "text" in obj else "caption" if "caption" in obj else None
        if key is None:
            bad("metadata_missing_text", f"for {file_name!r} has neither 'text' nor 'caption'; it is ignored",
                f"add \"text\": \"<caption>\" to {where}")
            continue
        caption = obj[key]
        if not isinstance(caption, str):
            bad("metadata_malformed", f"'{key}' for {file_name!r} is not a string; it is ignored",
                f"put the caption in quotes in {where}")
            continue
        image_rel, shown = resolve_file_name(root, rel_dir, file_name)
        if image_rel is None:
            bad("metadata_outside", f"file_name {file_name!r} points outside the dataset folder; refused",
                f"use a path inside the dataset folder in {where}")
            continue
        if "text" in obj and "caption" in obj and obj["caption"] != obj["text"]:
            meta.problems.append(Problem(WARNING, "caption_conflict", rel, f"line {number}: 'text' and 'caption' "
                                         "differ; 'text' is used", f"keep one of the two keys in {where}", "metadata"))
        if image_rel in meta.entries:
            first = meta.entries[image_rel].line
            meta.problems.append(Problem(WARNING, "metadata_duplicate", rel, f"line {number}: {file_name!r} already "
                                         f"has a caption on line {first}; line {first} is used",
                                         f"remove one of the two lines ({first}, {number})", "metadata"))
            continue
        meta.entries[image_rel] = MetadataEntry(caption, number, key)
    return meta


def _usable_line(line: str) -> dict | None:
    """The line's object when read_metadata would take its caption (the writer touches no other line)."""
    if not line.strip() or len(line) > MAX_CAPTION_CHARS + 4096:
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("file_name"), str) or not obj["file_name"].strip():
        return None
    key = "text" if "text" in obj else "caption" if "caption" in obj else None
    return obj if key is not None and isinstance(obj[key], str) else None


def write_metadata(path: Path, root: Path, updates: dict[str, str]) -> None:
    """Set the captions of ``updates`` (image rel path -> text) in ``path``, in one atomic rewrite.

    The file is read again first, so edits made meanwhile by someone else are kept. Lines of other images,
    malformed lines, unknown keys, key order and line endings stay as they are; images without a line
    get one appended.
    """
    rel = path.relative_to(root).as_posix()
    rel_dir = posixpath.dirname(rel)
    text = ""
    if path.exists():
        data = path.read_bytes()
        text, problems = decode_text(data, rel, "metadata")
        if text is None:
            raise LoraStudioError(f"{path} is not UTF-8 text, so LoRA Studio will not rewrite it.", _RESAVE)
    lines = _split_lines(text) if text else []
    crlf = any(line.endswith("\r") for line in lines)
    done: set[str] = set()
    out: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r")
        obj = _usable_line(line)
        target = None
        if obj is not None:
            # Only lines the reader accepted can name an image of ``updates``: no need to follow links again.
            target, _ = resolve_file_name(root, rel_dir, obj["file_name"], follow_links=False)
        if target in updates:
            if "text" in obj or "caption" not in obj:
                obj["text"] = updates[target]
            if "caption" in obj:
                obj["caption"] = updates[target]
            raw = json.dumps(obj, ensure_ascii=False) + ("\r" if raw.endswith("\r") else "")
            done.add(target)
        out.append(raw)
    new = [(r, t) for r, t in updates.items() if r not in done]
    if new:
        if out and out[-1] == "":
            out.pop()  # the file ended with a newline: append after it
        for image_rel, caption in new:
            name = posixpath.relpath(image_rel, rel_dir) if rel_dir else image_rel
            out.append(json.dumps({"file_name": name, "text": caption}, ensure_ascii=False) + ("\r" if crlf else ""))
        out.append("")
    io.write_text(path, "\n".join(out))
