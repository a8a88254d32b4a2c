"""A dataset on disk, whatever its layout: records with optional gender and condition labels.

`open_dataset(root)` recognises the layouts in `folders.py` (the seed's Female/Male/unlabeled)
and `celeba.py`. Files that cannot be used are listed in `Dataset.problems`, never fatal; a
dataset that is malformed as a whole (missing folders or annotation files) raises DatasetError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from training.data.images import Problem


class DatasetError(ValueError):
    """The dataset as a whole cannot be read; the message says what was expected."""


@dataclass(frozen=True)
class Record:
    file: str  # path relative to the dataset root, POSIX separators: the id used in every CSV
    path: Path
    female: bool | None  # None: no gender label (unlabeled/ folder)
    conditions: Mapping[str, float] = field(default_factory=dict)  # the conditions this layout knows
    split: str | None = None  # "train" / "val" / "test" where the dataset defines one


@dataclass(frozen=True)
class Dataset:
    root: Path
    layout: str
    records: tuple[Record, ...]
    problems: tuple[Problem, ...]
    missing_conditions: tuple[str, ...] = ()  # conditions this layout cannot provide at all

    @property
    def labelled(self) -> tuple[Record, ...]:
        return tuple(r for r in self.records if r.female is not None)

    def summary(self) -> str:
        n_f = sum(r.female is True for r in self.records)
        n_m = sum(r.female is False for r in self.records)
        n_u = sum(r.female is None for r in self.records)
        text = f"{self.layout} dataset at {self.root}: {n_f} female, {n_m} male, {n_u} unlabelled"
        if self.problems:
            text += f"; {len(self.problems)} file(s) skipped"
        if self.missing_conditions:
            text += f"; no labels for condition(s) {', '.join(self.missing_conditions)}"
        return text


def open_dataset(root: Path | str, verify: bool = True) -> Dataset:
    """Open a dataset in any supported layout (detected from what is on disk)."""
    from training.data import celeba, folders

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if celeba.looks_like(root):
        return celeba.open_celeba(root, verify=verify)
    if folders.looks_like(root):
        return folders.open_folders(root, verify=verify)
    raise DatasetError(
        f"{root}: unrecognised dataset layout. Expected either <root>/Female/ and <root>/Male/ "
        f"(optionally <root>/unlabeled/), or CelebA's <root>/img_align_celeba/ with list_attr_celeba.txt"
    )
