"""Write a procedural face set to disk in the seed's layout, with its ground truth.

    <out>/Female/000012.png, <out>/Male/…, <out>/unlabeled/<shard>/…
    <out>/labels.csv        ground truth for every image (gender, the five conditions, skin tone)
    <out>/hand_labels.csv   conditions of the first N female images by file name only — the
                            stand-in for the seed author's hand labels

Image i is drawn from its own generator seeded with (seed, i), so the set does not depend on
how many worker processes drew it, and a larger n extends a smaller one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from services.shared.conditions import CONDITIONS
from services.shared.labels import first_n_female, write_conditions_csv
from training.data.palette import to_palette
from training.data.synthetic import Face, SynthConfig, render, sample_face


@dataclass(frozen=True)
class SynthDatasetConfig:
    n: int = 10_000  # images in all
    seed: int = 0
    unlabeled_fraction: float = 0.2  # share placed in unlabeled/ (both genders)
    label_noise: float = 0.0  # probability that a labelled image sits in the wrong gender folder
    hand_labels: int = 1000  # N of "the first N female images by file name"
    shard_size: int = 1000  # unlabeled/ is split into sub-folders of this many images
    # 0 = full-colour PNG (~4.3 KB a face); K = a per-image palette of K colours (16: ~0.9 KB,
    # posterised; see training/data/palette.py for what it keeps and loses)
    colours: int = 0
    render: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be ≥ 1, got {self.n}")
        for name in ("unlabeled_fraction", "label_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.colours != 0 and not 2 <= self.colours <= 256:
            raise ValueError(f"colours must be 0 (full colour) or in [2, 256], got {self.colours}")


@dataclass(frozen=True)
class Placed:
    index: int
    file: str  # relative path in the dataset
    face: Face


def place(i: int, cfg: SynthDatasetConfig) -> Placed:
    """Draw face i and decide its folder (deterministic in (seed, i))."""
    rng = np.random.default_rng([cfg.seed, i])
    face = sample_face(rng, cfg.render)
    name = f"{i:06d}.png"
    if rng.random() < cfg.unlabeled_fraction:
        return Placed(i, f"unlabeled/{i // cfg.shard_size:03d}/{name}", face)
    folder_female = face.female != (rng.random() < cfg.label_noise)
    return Placed(i, f"{'Female' if folder_female else 'Male'}/{name}", face)


def save_png(rgb: np.ndarray, colours: int, fp) -> None:
    """Store one rendered face (to a path or file object) as the dataset does: full colour, or
    with a palette of `colours` colours (0 = full colour)."""
    if colours:
        to_palette(rgb, colours).save(fp, format="PNG", optimize=True)
    else:
        Image.fromarray(rgb).save(fp, format="PNG")


def _draw(args: tuple[range, SynthDatasetConfig, str]) -> list[Placed]:
    indices, cfg, out = args
    placed = []
    for i in indices:
        p = place(i, cfg)
        path = Path(out) / p.file
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(render(p.face, cfg.render), cfg.colours, path)
        placed.append(p)
    return placed


def write_synth_dataset(out: Path | str, cfg: SynthDatasetConfig, workers: int = 1, progress=None) -> list[Placed]:
    out = Path(out)
    for sub in ("Female", "Male", "unlabeled"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    chunk = 250
    jobs = [(range(s, min(s + chunk, cfg.n)), cfg, str(out)) for s in range(0, cfg.n, chunk)]
    placed: list[Placed] = []
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_draw, jobs):
                placed += part
                if progress:
                    progress(len(part))
    else:
        for job in jobs:
            part = _draw(job)
            placed += part
            if progress:
                progress(len(part))

    with (out / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", *CONDITIONS, "female", "skin_tone"])
        for p in placed:
            f = p.face
            w.writerow([p.file, *(f"{getattr(f, c):.6f}" for c in CONDITIONS), int(f.female), f"{f.skin_tone:.6f}"])
    female_files = [p.file for p in placed if p.file.startswith("Female/")]
    by_file = {p.file: p.face for p in placed}
    hand = first_n_female(female_files, cfg.hand_labels)
    write_conditions_csv(out / "hand_labels.csv", {f: {c: getattr(by_file[f], c) for c in CONDITIONS} for f in hand})
    (out / "synth_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return placed


def rendered_faces(root: Path | str, files: Iterable[str]) -> tuple[list[Face], SynthConfig]:
    """The ground truth behind each of `files` of a set this module wrote (its synth_config.json
    and the index in each file name), and the render settings that drew them: `render(face, cfg)`
    redraws a file, and with a changed field, the same face as it would look with that change."""
    from training import config as config_io

    path = Path(root) / "synth_config.json"
    if not path.exists():
        raise ValueError(f"{path} not found: not a set written by `facegen-train synth`")
    cfg = config_io.load(SynthDatasetConfig, path)
    faces = []
    for file in files:
        placed = place(int(Path(file).stem), cfg)
        if placed.file != file:
            raise ValueError(f"{file} is not where {path} puts face {placed.index} ({placed.file})")
        faces.append(placed.face)
    return faces, cfg.render
