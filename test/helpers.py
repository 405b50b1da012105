"""Helpers shared by tests in every folder (test/conftest.py puts this folder on sys.path)."""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest


def load_module(name: str, path: str | os.PathLike) -> ModuleType:
    """The Python file at ``path`` (a script, a launch file, a helper beside the tests) run as
    a module named ``name`` and returned; it is not added to sys.modules."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_checkpoint(path: str | os.PathLike, input_size: tuple[int, int] = (64, 96)) -> Path:
    """A small random-weight checkpoint (camera, events, LiDAR; 19 classes; embed_dim 32;
    seeded with 0) for the network size ``input_size``, saved at ``path``; its path."""
    import torch

    from anyseg_core.checkpoint import save_model
    from anyseg_core.model import AnymodalSegmentor

    torch.manual_seed(0)
    model = AnymodalSegmentor(["camera", "events", "lidar"], 19, embed_dim=32).eval()
    return save_model(path, model, {"input_size": list(input_size), "stage": "teacher",
                                    "step": 0, "train_config": {}})


def export_cache(root: Path) -> Iterator[Path]:
    """For a fixture to ``yield from``: ANYSEG_CACHE set to ``root`` while the fixture lives,
    as it was after; yields ``root``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANYSEG_CACHE", str(root))
        yield root


class ListLogger:
    """A session logger that collects what it is told, as (level, text) in ``lines``."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))

    def error(self, text: str) -> None:
        self.lines.append(("error", text))
