"""What every bench result records, and where results go by default.

Each result carries its provenance: the command line that made it (as ``python -m bench.NAME ...``), the card
and the date (UTC). Results go to ``--out``; by default a folder outside the repository
(``$LORA_STUDIO_BENCH_OUT`` or ``<tmp>/lora-studio-bench``), so a run never changes the tracked tree.
``bench/results/current/`` holds only what the README cites (copied there on purpose), ``archive/`` the rest.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path


def default_out() -> str:
    return os.environ.get("LORA_STUDIO_BENCH_OUT") or str(Path(tempfile.gettempdir()) / "lora-studio-bench")


def card() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - a broken CUDA setup still gets its result written
        return "unknown"


_command: str | None = None


def invoked(module: str, argv: list[str] | None) -> None:
    """A script's ``main(argv)`` says how it was called (argv None: the process's own arguments)."""
    global _command
    _command = shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def command_line() -> str:
    """The command that reproduces this run: ``python -m bench.<script> <its arguments>``."""
    if _command is not None:
        return _command
    script = Path(sys.argv[0]).stem if sys.argv else "?"
    return shlex.join(["python", "-m", "bench" if script == "__main__" else f"bench.{script}", *sys.argv[1:]])


def provenance() -> dict:
    return {"command": command_line(), "card": card(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def save(out: str | os.PathLike, stem: str, result: dict, markdown: str | None = None) -> Path:
    """``out/stem.json`` (the result with its provenance) and ``out/stem.md`` (the table, the command first)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prov = result.setdefault("provenance", provenance())
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    if markdown is not None:
        head = f"Command: `{prov['command']}` ({prov['card']}, {prov['date']})\n\n"
        (out / f"{stem}.md").write_text(head + markdown)
    return out / f"{stem}.json"
