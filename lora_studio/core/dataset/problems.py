"""One problem found in a dataset: which file, what is wrong, what to do, and how bad it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ERROR = "error"  # training would stop or silently lose data: fix before training
WARNING = "warning"  # handled automatically (the message says how); worth knowing


@dataclass(frozen=True)
class Problem:
    severity: str  # ERROR or WARNING
    kind: str  # stable code, e.g. "truncated", "cmyk", "not_utf8", "metadata_outside"
    file: str  # path relative to the dataset folder (posix), "" for the folder itself
    message: str
    advice: str = ""
    category: str = "image"  # "image", "caption", "metadata", "folder", "dataset"

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        text = f"{self.severity}: {self.file or '.'}: {self.message}"
        return f"{text} -> {self.advice}" if self.advice else text
