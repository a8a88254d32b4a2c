"""Whether an edited face is still the same face, judged in the benchmark's ImageNet features:
nearest-neighbour identity against the sources, and the true edit a perfect editor would make
(the procedural renderer redrawing a face from its recorded ground truth with one condition
changed), against which an edit's identity can be read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from training.quality.feature_net import features


def nearest_is_source(net, edited: np.ndarray, f_src: np.ndarray) -> float:
    """The share of edited faces (row i from source i) whose nearest source, in the features
    `f_src` of the sources, is their own."""
    f = features(net, edited)
    d = (f * f).sum(1)[:, None] + (f_src * f_src).sum(1)[None, :] - 2 * f @ f_src.T
    return float((d.argmin(1) == np.arange(len(f))).mean())


def nearest_is_own(net, edited: np.ndarray, references: np.ndarray) -> float:
    """The share of edited faces whose nearest reference (e.g. the true edits) is their own."""
    return nearest_is_source(net, edited, features(net, references))


def true_edits(root: Path, files: tuple[str, ...], condition: str, target: np.ndarray) -> np.ndarray:
    """Each face of `files` (a set `facegen-train synth` wrote under `root`) redrawn by the
    renderer with `condition` set to its target."""
    from training.data.synth_dataset import rendered_faces
    from training.data.synthetic import render

    faces, cfg = rendered_faces(root, files)
    return np.stack([render(dataclasses.replace(face, **{condition: float(t)}), cfg)
                     for face, t in zip(faces, target, strict=True)])
