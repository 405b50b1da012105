"""Helpers shared by tests in every folder (test/conftest.py puts this folder on sys.path)."""
from __future__ import annotations

import importlib.util
import os
from types import ModuleType


def load_module(name: str, path: str | os.PathLike) -> ModuleType:
    """The Python file at ``path`` (a script, a launch file, a helper beside the tests) run as
    a module named ``name`` and returned; it is not added to sys.modules."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
