"""Fixtures of the core tests: tiny checkpoints trained by the project's own training code."""
from __future__ import annotations

from pathlib import Path

import pytest

from anyseg_core.config import load_config
from anyseg_core.train import train

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = REPO_ROOT / "config" / "train_tiny.yaml"


def tiny_config(out_dir: Path, *overrides: str) -> dict:
    return load_config(TINY, [f"out_dir={out_dir}", *overrides])


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    """``tiny_config(out_dir, *overrides)``: config/train_tiny.yaml writing to out_dir."""
    return tiny_config


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A PML teacher trained for a few steps with config/train_tiny.yaml."""
    out = tmp_path_factory.mktemp("tiny_teacher")
    return train(tiny_config(out, "train.eval_samples=1"))


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory, tiny_teacher) -> Path:
    """An anymodal student distilled from ``tiny_teacher`` for a few steps."""
    out = tmp_path_factory.mktemp("tiny_student")
    return train(tiny_config(out, "stage=student", f"teacher.checkpoint={tiny_teacher}",
                             "dropout.policy=per_sample", "train.eval_samples=1"))
