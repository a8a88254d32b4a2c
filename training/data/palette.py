"""Compact storage for procedural faces: a per-image palette of a few colours (PNG mode "P").

A shaded face costs ~4.3 KB as a full-colour PNG, because its smooth shading leaves ±1
quantisation noise that deflate cannot squeeze (tests/perf/png_budget.py). A palette of 16
colours takes it to ~0.9 KB — posterised, but still shaded.

The palette is chosen for what a face detector (and a model trained on the faces) reads:
luminance. Pillow's median cut runs on YCbCr with the chroma halved, so the colours are spent on
brightness steps — the highlights and eye sockets that keep dark skin detectable — rather than
on hue. Haar rate on near-frontal dark skin, this vs plain RGB median cut
(`python tests/perf/png_budget.py --n 1500 --haar`): 16 colours .944 vs .920, 12 colours .923
vs .829 (full colour: .976). Each palette entry is then the mean RGB of the pixels it stands for,
so regions keep their average colour (and `background` its brightness).
What it loses at 16 colours: smooth shading becomes bands, and small coloured details (lip red,
iris colour) often merge into the skin — and lip colour is one of the gender cues.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CHROMA_WEIGHT = 0.5  # chroma's share of the colour distance, against luminance's 1
KMEANS_ITERATIONS = 4  # Pillow refines the median-cut palette this many times


def to_palette(rgb: np.ndarray, colours: int) -> Image.Image:
    """`rgb` (H×W×3 uint8) as a "P"-mode image of at most `colours` colours, undithered."""
    if not 2 <= colours <= 256:
        raise ValueError(f"colours must be in [2, 256], got {colours}")
    ycc = np.asarray(Image.fromarray(rgb).convert("YCbCr"), np.float32)
    ycc[..., 1:] = 128.0 + CHROMA_WEIGHT * (ycc[..., 1:] - 128.0)
    # Pillow quantises RGB images only: the YCbCr numbers go in as if they were RGB
    labels = np.asarray(Image.fromarray(ycc.round().astype(np.uint8)).quantize(
        colours, method=Image.Quantize.MEDIANCUT, kmeans=KMEANS_ITERATIONS, dither=Image.Dither.NONE))
    flat = labels.ravel()
    count = np.bincount(flat, minlength=colours)[:, None]
    sums = np.stack([np.bincount(flat, rgb[..., c].ravel(), minlength=colours) for c in range(3)], 1)
    palette = np.rint(sums / np.maximum(count, 1)).astype(np.uint8)
    out = Image.fromarray(labels, "P")
    out.putpalette(palette.ravel().tolist())
    return out
