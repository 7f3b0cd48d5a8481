"""The layer contract: core never imports Qt; GUI widgets never import torch/diffusers/peft."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import lora_studio

PKG = Path(lora_studio.__file__).parent


def _core_modules():
    import lora_studio.core as core

    return [m.name for m in pkgutil.walk_packages(core.__path__, "lora_studio.core.")]


def test_core_imports_no_qt():
    modules = ["lora_studio.config", *_core_modules()]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"lora_studio.core pulled in Qt: {out.stdout}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_source_has_no_qt_import():
    for path in (PKG / "core").rglob("*.py"):
        assert not _imports(path) & {"PySide6", "pyqtgraph", "shiboken6"}, path


def test_gui_widgets_import_no_torch():
    gui = PKG / "gui"
    for path in gui.rglob("*.py"):
        if path.name == "workers.py":
            continue  # workers host core jobs on QThreads; they may import core (which imports torch)
        bad = _imports(path) & {"torch", "diffusers", "peft", "transformers", "accelerate"}
        assert not bad, f"{path.relative_to(PKG)} imports {bad}"
