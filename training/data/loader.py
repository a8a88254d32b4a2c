"""Decode a dataset's records into one uint8 array, and split it deterministically.

The models here are small (64×64) and the datasets fit in memory (10,000 images are 120 MB),
so training decodes once with a thread pool (Pillow releases the GIL) and then samples batches
from RAM. Files that fail to decode are returned as problems, never fatal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from services.shared.dataset import Problem, Record
from services.shared.images import InvalidImage, read
from training.data.preprocess import Preprocess, crop_and_resize


def _load_one(args: tuple[Record, Preprocess]) -> np.ndarray | Problem:
    record, pre = args
    try:
        return crop_and_resize(read(record.path), pre)
    except InvalidImage as exc:
        return Problem(str(record.path), str(exc))


def load_images(
    records: Sequence[Record], pre: Preprocess, workers: int = 4, progress=None
) -> tuple[np.ndarray, list[Record], list[Problem]]:
    """(images uint8 [N, H, W, 3], the records that loaded, the problems) in input order."""
    images = np.empty((len(records), pre.height, pre.width, 3), np.uint8)
    kept: list[Record] = []
    problems: list[Problem] = []
    with ThreadPoolExecutor(workers) as pool:
        for rec, out in zip(records, pool.map(_load_one, [(r, pre) for r in records], chunksize=64), strict=True):
            if isinstance(out, Problem):
                problems.append(out)
            else:
                images[len(kept)] = out
                kept.append(rec)
            if progress:
                progress(1)
    return images[: len(kept)], kept, problems


def split_of(file: str, seed: int, val: float, test: float) -> str:
    """'train' / 'val' / 'test' from a hash of (seed, file): stable whatever the listing order,
    and adding images to a dataset never moves existing ones between splits."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{file}".encode()).digest()[:8], "big") / 2**64
    return "test" if h < test else "val" if h < test + val else "train"
