"""A dataset on disk, whatever its layout: records with optional gender and condition labels.

`layouts.open_dataset(root)` recognises the layouts in `folders.py` (the seed's
Female/Male/unlabeled) and `celeba.py`. Files that cannot be used are listed in `Dataset.problems`, never fatal; a
dataset that is malformed as a whole (missing folders or annotation files) raises DatasetError.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.shared.images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def find_images(folder: Path, recursive: bool = True) -> tuple[list[Path], list[Problem]]:
    """Image files under `folder` sorted by path, plus non-image files as problems. Hidden files
    and folders are skipped, and a linked folder is not entered (a link to / would list the
    machine, a link loop for ever); a linked file is listed (reading it is the reader's call)."""
    found: list[Path] = []
    problems: list[Problem] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in filenames:
            p = Path(dirpath) / name
            if name.startswith(".") or not (p.is_file() or p.is_symlink()):
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                found.append(p)
            else:
                problems.append(Problem(str(p), f"not an image file (suffix {p.suffix or 'none'!r})"))
    return sorted(found), sorted(problems, key=lambda q: q.path)


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


def open_unlabelled(root: Path, verify: bool = True) -> Dataset:
    """Any folder as a set of unlabelled images (every image file under it)."""
    from services.shared.images import file_problem

    paths, problems = find_images(root, recursive=True)
    records = []
    for p in paths:
        if verify and (reason := file_problem(p)):
            problems.append(Problem(str(p), reason))
        else:
            records.append(Record(file=p.relative_to(root).as_posix(), path=p, female=None))
    return Dataset(root=root, layout="unlabelled", records=tuple(records), problems=tuple(problems))
