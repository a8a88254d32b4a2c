"""Small figures drawn with Pillow alone (no plotting library is installed here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def scatter_grid(path: Path, truth: np.ndarray, pred: np.ndarray, names: Sequence[str], title: str = "",
                 panel: int = 220) -> None:
    """One predicted-vs-true scatter panel per column of truth/pred (values in [0, 1])."""
    pad, top = 28, 34
    img = Image.new("RGB", (panel * len(names), panel + top), "white")
    d = ImageDraw.Draw(img)
    d.text((6, 4), f"predicted (y) vs true (x), {title}, n={len(truth)}", fill="black")
    span = panel - 2 * pad
    for k, name in enumerate(names):
        x0, y0 = k * panel + pad, top + pad
        d.rectangle([x0, y0 - pad + 14, x0 + span, y0 + span - pad + 14], outline="black")
        d.line([x0, y0 + span - pad + 14, x0 + span, y0 - pad + 14], fill=(170, 170, 170))
        err = float(np.abs(pred[:, k] - truth[:, k]).mean()) if len(truth) else float("nan")
        d.text((x0, top), f"{name}  MAE {err:.3f}", fill="black")
        for t, p in zip(truth[:, k], pred[:, k], strict=True):
            px, py = x0 + t * span, y0 - pad + 14 + (1 - p) * span
            d.point([(px, py), (px + 1, py), (px, py + 1)], fill=(40, 90, 200))
    img.save(path)
