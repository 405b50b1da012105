"""What the real-data readers (MUSES, DELIVER) share: an error that names the file, opening a
PNG, the "check the files when the dataset is built, skip and count broken items on request"
logic, the training item (label and joint augmentation), and the checked selection
arguments."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch

from ..sensors import prepare_label


class DataFileError(ValueError):
    """A data file (or folder, or index entry) that is missing or cannot be used; ``path``
    names it, ``problem`` says what is wrong."""

    def __init__(self, path: Path | str, problem: Optional[str] = None) -> None:
        if problem is None:  # rebuilt from its message alone (DataLoader workers, pickle)
            self.path, self.problem = None, str(path)
            super().__init__(str(path))
            return
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def open_png(path: Path, error: type[DataFileError] = DataFileError):
    """The PNG at ``path`` opened and decoded (a PIL image), or ``error`` naming the file: it
    is missing, cannot be decoded, or is another format."""
    from PIL import Image

    if not Path(path).is_file():
        raise error(path, "missing")
    try:
        img = Image.open(path)
        img.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... on bad data
        raise error(path, f"not a readable PNG ({type(err).__name__}: {err})") from None
    if img.format != "PNG":
        raise error(path, f"is a {img.format} image, not a PNG")
    return img


class SkipBrokenItems:
    """Mixin of a dataset whose items (scenes, frames) each have files, one per part.

    The subclass sets ``root``, ``split``, ``skip_broken``, ``skipped`` (a list of
    ``(name, path, problem)``), ``size_hw``, ``augment``, ``seed`` and ``return_raw``, and
    defines ``_items()`` (the item list itself, which :meth:`verify` edits in place),
    ``_part_path(item, part)``, ``_folder(part)``, ``_item(i, index)`` (which ends with
    :meth:`_training_item`) and ``_read(item)`` (read every file of an item, raising its
    error) and ``_empty_message(n_before)``; class attributes ``error`` (its :class:`DataFileError`), ``dataset_name`` and
    ``unit`` ("scene", "frame"), and optionally ``_file_problem(part, path)`` for checks beyond
    existence.
    """

    error: type[DataFileError] = DataFileError
    dataset_name = "data"
    unit = "item"

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def _file_problem(self, part: str, path: Path) -> Optional[str]:
        return None

    def _check_files(self, items: list, parts: Sequence[str]) -> list:
        """The items whose files are all there (and pass ``_file_problem``); the others raise
        (naming the first broken file) or, with ``skip_broken``, are recorded in ``skipped``."""
        keep, problems = [], []
        for item in items:
            problem = None
            for part in parts:
                path = self._part_path(item, part)
                if not path.is_file():
                    problem = (item.name, path, "missing" + self._missing_hint(part))
                else:
                    found = self._file_problem(part, path)
                    problem = None if found is None else (item.name, path, found)
                if problem:
                    break
            if problem is None:
                keep.append(item)
            else:
                problems.append(problem)
        if problems and not self.skip_broken:
            _, path, problem = problems[0]
            more = (f" ({len(problems)} {self.unit}s have a missing or broken file)"
                    if len(problems) > 1 else "")
            raise self.error(path, problem + more)
        self.skipped.extend(problems)
        return keep

    def _usable(self, items: list, parts: Sequence[str]) -> list:
        """:meth:`_check_files`, then an error (``_empty_message``) when nothing is left and a
        warning when some items were skipped."""
        keep = self._check_files(items, parts)
        if not keep:
            raise ValueError(self._empty_message(len(items)))
        if self.skipped:
            warnings.warn(f"{self.dataset_name} {self.split}: {len(self.skipped)} {self.unit}(s) "
                          f"skipped (first: {self.skipped[0][1]}: {self.skipped[0][2]})",
                          stacklevel=3)
        return keep

    def _missing_hint(self, part: str) -> str:
        folder = self._folder(part)
        if folder.is_dir():
            return ""
        if part == "label":
            return f" (no {folder.name}/ folder: ground truth is needed for this split)"
        return (f" (no {folder.name}/ folder at all: download it, or leave {part!r} out of "
                f"the modalities)")

    def verify(self) -> list[tuple[str, Path, str]]:
        """Read every item once; returns the problems found. Without ``skip_broken`` the
        first one raises; with it, broken items are dropped from the dataset."""
        problems, keep = [], []
        for item in self._items():
            try:
                self._read(item)
                keep.append(item)
            except self.error as err:
                if not self.skip_broken:
                    raise
                problems.append((item.name, err.path, err.problem))
        self._items()[:] = keep
        self.skipped.extend(problems)
        return problems

    def _training_item(self, inputs: dict, label: Any, index: int, condition: str, name: str,
                       raw: Any) -> dict:
        """The dataset item: ``inputs`` (prepared tensors) and the ``label`` array at
        ``size_hw``, both through the joint augmentation (seeded by the index) when there is
        one, with the condition and name; the raw sample too with ``return_raw``."""
        label = prepare_label(label, self.size_hw)
        if self.augment is not None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            inputs, label = self.augment(inputs, label, g)
        item = {"inputs": inputs, "label": label, "condition": condition, "index": index,
                "name": name}
        if self.return_raw:
            item["raw"] = raw
        return item

    def __len__(self) -> int:
        return len(self._items())

    def __getitem__(self, index: int) -> dict:
        items = self._items()
        if not 0 <= index < len(items):
            raise IndexError(f"index {index} out of range for {len(items)} {self.unit}s")
        # With skip_broken, an unreadable item is replaced by the next readable one.
        for k in range(len(items)):
            i = (index + k) % len(items)
            try:
                return self._item(i, index)
            except self.error as err:
                if not self.skip_broken:
                    raise
                name = items[i].name
                if all(s[0] != name for s in self.skipped):  # count each item once
                    self.skipped.append((name, err.path, err.problem))
                    warnings.warn(f"{self.dataset_name}: skipping {err} ({self.num_skipped} "
                                  "skipped so far)", stacklevel=2)
        raise self.error(self.root, f"no readable {self.unit} in split {self.split!r}")

    def _items(self) -> list[Any]:  # pragma: no cover - defined by every subclass
        raise NotImplementedError


def as_set(value: Optional[str | Iterable[str]], allowed: Sequence[str],
           what: str) -> Optional[set[str]]:
    """A selection argument (one name, several, or None for all) as a set, checked against
    ``allowed``; ``what`` names it in the error ("MUSES weather")."""
    if value is None:
        return None
    values = {value} if isinstance(value, str) else set(value)
    bad = sorted(values - set(allowed))
    if bad:
        raise ValueError(f"unknown {what} {bad}; expected some of {list(allowed)}")
    return values
