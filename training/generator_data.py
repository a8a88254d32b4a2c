"""The generator's training set, shared by both of its stages: the images `facegen-train label`
gave conditions to (`conditions.csv`), decoded once, with a 5 % held-out split by file name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.stages import Echo, StageError, open_dataset, print_echo


@dataclass(frozen=True)
class GeneratorSet:
    images: np.ndarray  # uint8 [N, H, W, 3]
    conditions: np.ndarray  # float32 [N, 5], in CONDITIONS order
    held_out: np.ndarray  # bool [N]


def load_generator_set(data: Path, conditions_csv: Path | None, image_size: int, seed: int,
                       echo: Echo = print_echo) -> GeneratorSet:
    """Raises StageError with what to do when the set is missing or empty."""
    from tqdm import tqdm

    from services.shared.conditions import CONDITIONS
    from services.shared.labels import read_conditions_csv
    from training.data.loader import load_images, split_of
    from training.data.preprocess import Preprocess

    try:
        conds = read_conditions_csv(conditions_csv or data / "conditions.csv")
    except ValueError as exc:
        raise StageError(f"{exc} (run `facegen-train select` and `facegen-train label` first)") from exc
    ds = open_dataset(data)
    by_file = {r.file: r for r in ds.records}
    records = [by_file[f] for f in sorted(conds) if f in by_file]
    with tqdm(total=len(records), unit="img", desc="decode") as bar:
        images, kept, problems = load_images(records, Preprocess(image_size, image_size), progress=bar.update)
    c = np.array([[conds[r.file][k] for k in CONDITIONS] for r in kept], np.float32).reshape(-1, len(CONDITIONS))
    is_val = np.array([split_of(r.file, seed, 0.05, 0.0) == "val" for r in kept], dtype=bool)
    echo(f"{len(kept)} images ({int(is_val.sum())} held out), {len(problems)} skipped")
    if not (~is_val).any():
        raise StageError(f"{data}: no images to train on ({len(kept)} readable of {len(records)} labelled, "
                         f"{int(is_val.sum())} held out)")
    return GeneratorSet(images, c, is_val)
