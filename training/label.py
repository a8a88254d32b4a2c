"""Label the generator's training set: the attribute model's conditions for every image the
filter selected (`kept` in selection.csv). As the seed author did, hand-labelled images get the
model's predictions too, so every row comes from one consistent labeller."""

from __future__ import annotations

from pathlib import Path

from services.shared.conditions import CONDITIONS
from services.shared.dataset import Dataset
from services.shared.labels import write_conditions_csv
from training.data.loader import load_images
from training.select import OnnxImageModel


def label(ds: Dataset, selected: list[str], model: OnnxImageModel, progress=None):
    """({file: conditions}, problems) for the selected files that exist in the dataset."""
    by_file = {r.file: r for r in ds.records}
    missing = [f for f in selected if f not in by_file]
    images, records, problems = load_images([by_file[f] for f in selected if f in by_file], model.preprocess,
                                            progress=progress)
    pred = model(images)
    rows = {r.file: dict(zip(CONDITIONS, map(float, p), strict=True)) for r, p in zip(records, pred, strict=True)}
    return rows, [*problems, *missing]


def write(path: Path, rows) -> None:
    write_conditions_csv(path, rows)
