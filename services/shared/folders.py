"""The seed's layout: <root>/Female/, <root>/Male/ (gender-labelled) and <root>/unlabeled/ (any
depth). An optional labels CSV at <root>/labels.csv (file + the five conditions, e.g. the
procedural set's ground truth) attaches conditions to the records it names."""

from __future__ import annotations

from pathlib import Path

from services.shared.dataset import Dataset, DatasetError, Problem, Record, find_images
from services.shared.images import file_problem
from services.shared.labels import read_conditions_csv

LABELLED = {"Female": True, "Male": False}
UNLABELED = "unlabeled"
CONDITIONS_FILE = "labels.csv"


def looks_like(root: Path) -> bool:
    return any((root / name).is_dir() for name in (*LABELLED, UNLABELED))


def open_folders(root: Path, verify: bool = True, partial: bool = False) -> Dataset:
    """The layout's records; `partial` lists a layout that lacks Female/ or Male/ (a filter job's
    set may be all one gender) where training, which learns from both, refuses it."""
    missing = [name for name in LABELLED if not (root / name).is_dir()]
    if missing and not partial:
        raise DatasetError(
            f"{root}: missing folder(s) {', '.join(missing)}/ — the gender-labelled layout needs "
            f"both {root / 'Female'} and {root / 'Male'} (plus optional {root / UNLABELED})"
        )
    conditions = read_conditions_csv(root / CONDITIONS_FILE) if (root / CONDITIONS_FILE).is_file() else {}
    records: list[Record] = []
    problems: list[Problem] = []
    sources = [(root / name, female) for name, female in LABELLED.items() if (root / name).is_dir()]
    if (root / UNLABELED).is_dir():
        sources.append((root / UNLABELED, None))
    for folder, female in sources:
        paths, skipped = find_images(folder, recursive=True)
        problems += skipped
        for p in paths:
            reason = file_problem(p) if verify else None
            if reason:
                problems.append(Problem(str(p), reason))
                continue
            file = p.relative_to(root).as_posix()
            records.append(Record(file=file, path=p, female=female, conditions=conditions.get(file, {})))
    return Dataset(root=root, layout="folders", records=tuple(records), problems=tuple(problems))
