"""Attribute-label CSV files (`file,eyes,mouth,hair_color,background,head`) and the seed's rule
for which images get hand labels: the first N female images by file name."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from services.shared.conditions import CONDITIONS


class LabelFileError(ValueError):
    """A label CSV that cannot be used; the message names the file and line."""


def read_conditions_csv(path: Path | str) -> dict[str, dict[str, float]]:
    """{file: {condition: value}} from a CSV whose header holds `file` and the five conditions.

    Extra columns (e.g. ground-truth `female` in labels.csv) are allowed and ignored. Every
    value must be a finite number in [0, 1]; files must be unique.
    """
    return _read(path, blanks=False)


def read_hand_labels(path: Path | str) -> dict[str, dict[str, float | None]]:
    """A hand-labelling sheet: as read_conditions_csv, but a blank value (None) is one still to
    fill in. A row is labelled when all five are filled (`complete`)."""
    return _read(path, blanks=True)


def complete(rows: Mapping[str, Mapping[str, float | None]]) -> dict[str, dict[str, float]]:
    """The rows of a sheet with all five conditions filled in."""
    return {f: dict(v) for f, v in rows.items() if all(v.get(c) is not None for c in CONDITIONS)}


def _read(path: Path | str, blanks: bool):
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(f"{path}: label file not found")
    out: dict[str, dict[str, float]] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in ("file", *CONDITIONS) if c not in header]
        if missing:
            raise LabelFileError(f"{path}: missing column(s) {', '.join(missing)}; header is {','.join(header)}")
        for line, row in enumerate(reader, start=2):
            name = (row["file"] or "").strip()
            if not name:
                raise LabelFileError(f"{path}:{line}: empty file name")
            if name in out:
                raise LabelFileError(f"{path}:{line}: duplicate file {name!r}")
            values = {}
            for c in CONDITIONS:
                raw = row[c]
                if blanks and (raw or "").strip() == "":
                    values[c] = None
                    continue
                try:
                    v = float(raw)
                except (TypeError, ValueError):
                    raise LabelFileError(f"{path}:{line}: {c}={raw!r} is not a number") from None
                if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                    raise LabelFileError(f"{path}:{line}: {c}={raw} is outside [0, 1]")
                values[c] = v
            out[name] = values
    return out


def write_conditions_csv(
    path: Path | str, rows: Mapping[str, Mapping[str, float | None]], extra: Iterable[str] = ()
) -> None:
    """Write {file: {condition (and extra column): value}} sorted by file, 6 decimals (None: blank)."""
    extra = tuple(extra)
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", *CONDITIONS, *extra])
        for name in sorted(rows):
            r = rows[name]
            w.writerow([name, *(_fmt(r[c]) for c in CONDITIONS), *(_fmt(r[c]) for c in extra)])


def _fmt(v: float | int | str | None) -> str:
    return "" if v is None else f"{v:.6f}" if isinstance(v, float) else str(v)


def first_n_female(female_files: Iterable[str], n: int) -> list[str]:
    """The seed's hand-labelled subset: the first `n` female images ordered by file name.

    Ordered by the file's base name (then its full path, so the order is total), as a person
    scrolling the Female/ folder sees them; returned as given.
    """
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    return sorted(female_files, key=lambda f: (PurePosixPath(f).name, f))[:n]
