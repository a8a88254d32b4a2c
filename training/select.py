"""Pick the generator's training set: score every image with the exported filter and decide
by the rule the filter service's jobs follow (services/shared/selection.py: selection.csv's
rows and format). Scoring uses the exported ONNX model, the one the services run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.shared.dataset import Dataset
from services.shared.selection import (
    DEFAULT_THRESHOLD,
    Decision,
    check_threshold,
    decide,
    problem_decisions,
    problem_file,
    unreadable,
)
from training.data.loader import load_images
from training.data.preprocess import Preprocess
from training.export import open_export


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


def select(ds: Dataset, model: OnnxFilter, threshold: float = DEFAULT_THRESHOLD, progress=None) -> list[Decision]:
    """Every file of `ds` decided by the shared selection rule (services/shared/selection.py)."""
    check_threshold(threshold)
    images, records, problems = load_images(ds.records, model.preprocess, progress=progress)
    p = model(images)
    out = [decide(rec.file, rec.female, pf, threshold) for rec, pf in zip(records, p, strict=True)]
    out += problem_decisions(ds) + [unreadable(problem_file(ds, prob), prob.reason) for prob in problems]
    return sorted(out, key=lambda d: d.file)
