"""Finding a dataset's image files. A dataset of thousands of photos always holds a few bad
files: they are reported by path with a reason and skipped; they never stop a run. Reading and
fitting an image is the rule serving shares (services/shared/images.py)."""

from __future__ import annotations

from dataclasses import dataclass
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
    """Image files under `folder` sorted by path, plus non-image files as problems."""
    found: list[Path] = []
    problems: list[Problem] = []
    walker = folder.rglob("*") if recursive else folder.glob("*")
    for p in sorted(walker):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            found.append(p)
        else:
            problems.append(Problem(str(p), f"not an image file (suffix {p.suffix or 'none'!r})"))
    return found, problems
