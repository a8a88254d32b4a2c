"""Pick the generator's training set: score every image with the exported filter.

Writes selection.csv (`file,p_female,kept,reason`) with one row per file of the dataset, sorted
by file: kept images have P(female) ≥ threshold and, as the seed author did, never come from
the Male/ folder; files that cannot be decoded are listed with reason `unreadable: …`.
Scoring uses the exported ONNX model (the one the services run), so both agree exactly.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.dataset import Dataset
from training.data.loader import load_images
from training.data.preprocess import Preprocess
from training.export import open_export

REASONS = ("kept", "below_threshold", "male_folder", "unreadable")


@dataclass(frozen=True)
class Decision:
    file: str
    p_female: float | None
    kept: bool
    reason: str


class OnnxImageModel:
    """An exported image model under ONNX Runtime (sha256 checked against card.json first).

    Training-side inference (selection, labelling) runs the exported graph, the very one the
    services run, so both agree exactly.
    """

    def __init__(self, export_dir: Path | str) -> None:
        self.signature, self.session = open_export(export_dir)
        img = self.signature["image"]
        self.preprocess = Preprocess(height=img["height"], width=img["width"])

    def __call__(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """The first output for a uint8 NHWC batch."""
        name = self.signature["inputs"][0]["name"]
        parts = [self.session.run(None, {name: images[i : i + batch]})[0] for i in range(0, len(images), batch)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


OnnxFilter = OnnxImageModel  # the filter's first output is p_female


def select(ds: Dataset, model: OnnxFilter, threshold: float = 0.9, progress=None) -> list[Decision]:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    images, records, problems = load_images(ds.records, model.preprocess, progress=progress)
    p = model(images)
    out = []
    for rec, pf in zip(records, p, strict=True):
        if rec.female is False:
            out.append(Decision(rec.file, float(pf), False, "male_folder"))
        else:
            kept = bool(pf >= threshold)
            out.append(Decision(rec.file, float(pf), kept, "kept" if kept else "below_threshold"))
    for prob in (*ds.problems, *problems):
        try:
            file = Path(prob.path).relative_to(ds.root).as_posix()
        except ValueError:
            file = prob.path
        out.append(Decision(file, None, False, f"unreadable: {prob.reason}"))
    return sorted(out, key=lambda d: d.file)


def write_selection(path: Path | str, decisions: list[Decision]) -> None:
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "p_female", "kept", "reason"])
        for d in decisions:
            w.writerow([d.file, "" if d.p_female is None else f"{d.p_female:.6f}", int(d.kept), d.reason])
