"""Which images of a dataset the generator trains on, and selection.csv: one rule for
`facegen-train select` and the filter service's dataset jobs, so both write the same file.

Every file the dataset's layout lists gets one row, sorted by file (`file,p_female,kept,reason`):
kept when P(female) ≥ threshold, unless the layout labels it male (the Male/ folder, CelebA's
`Male` attribute: the seed author never kept a labelled male); files the layout skips or that
cannot be decoded are rows with reason `unreadable: …` and no P(female).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from services.shared.dataset import Dataset, Problem

DEFAULT_THRESHOLD = 0.9
HEADER = ("file", "p_female", "kept", "reason")
REASONS = ("kept", "below_threshold", "male_folder", "unreadable")


@dataclass(frozen=True)
class Decision:
    file: str
    p_female: float | None
    kept: bool
    reason: str


def check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return threshold


def decide(file: str, female: bool | None, p_female: float, threshold: float) -> Decision:
    """The decision for a decoded, scored image whose layout says `female` (None: unlabelled)."""
    if female is False:
        return Decision(file, float(p_female), False, "male_folder")
    kept = bool(p_female >= threshold)
    return Decision(file, float(p_female), kept, "kept" if kept else "below_threshold")


def unreadable(file: str, why: str) -> Decision:
    return Decision(file, None, False, f"unreadable: {why}")


def problem_file(ds: Dataset, problem: Problem) -> str:
    """A skipped file's row name: its path relative to the dataset root, as every other row's."""
    try:
        return Path(problem.path).relative_to(ds.root).as_posix()
    except ValueError:
        return problem.path


def problem_decisions(ds: Dataset) -> list[Decision]:
    """A row for every file the layout skipped (not an image, a bad header, unlisted …)."""
    return [unreadable(problem_file(ds, p), p.reason) for p in ds.problems]


def row(d: Decision) -> list[str]:
    return [d.file, "" if d.p_female is None else f"{d.p_female:.6f}", str(int(d.kept)), d.reason]


def selection_csv(decisions: list[Decision]) -> str:
    """The text of selection.csv, rows sorted by file."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HEADER)
    w.writerows(row(d) for d in sorted(decisions, key=lambda d: d.file))
    return buf.getvalue()


def write_selection(path: Path | str, decisions: list[Decision]) -> None:
    Path(path).write_text(selection_csv(decisions), newline="")


def read_selected(selection_csv: Path | str) -> list[str]:
    """The kept files of a selection.csv."""
    with Path(selection_csv).open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"file", "kept"} <= set(reader.fieldnames or []):
            raise ValueError(f"{selection_csv}: expected columns {','.join(HEADER)}")
        return [r["file"] for r in reader if r["kept"] == "1"]
