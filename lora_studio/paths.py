"""Where the app's bundled files live, in a source checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resources_dir() -> Path:
    # A wheel maps the repository's resources/ to lora_studio/resources (see pyproject.toml).
    installed = _PKG / "resources"
    if installed.is_dir():
        return installed
    return _PKG.parent / "resources"


def resource(*parts: str) -> Path:
    return resources_dir().joinpath(*parts)


def runs_dir() -> Path:
    """Where runs go unless a config says otherwise: ``<Documents>/LoRA Studio/runs`` (absolute, so a run
    started from the menu does not land in whatever folder the app happened to start in)."""
    import platformdirs

    return Path(platformdirs.user_documents_dir()).absolute() / "LoRA Studio" / "runs"
