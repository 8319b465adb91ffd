"""Scripts and Space apps are files, not package modules: tests import them from their paths."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_file(path: Path, name: str) -> ModuleType:
    """Import the Python file at ``path`` as module ``name``, registered in ``sys.modules`` (dataclasses resolve
    their annotations through it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module."""
    return load_file(REPO_ROOT / "scripts" / f"{name}.py", f"{name}_script")
