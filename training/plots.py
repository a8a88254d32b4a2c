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


_COLOURS = ((40, 90, 200), (200, 70, 40), (40, 150, 70), (150, 60, 170), (120, 120, 120), (0, 0, 0))


def line_panels(path: Path, x: Sequence[float], panels: Sequence[dict], x_label: str = "", marks: Sequence[float] = (),
                size: tuple[int, int] = (330, 250)) -> None:
    """Side-by-side line charts sharing the x values. Each panel: {"title": str, "lines": {label:
    values}, "refs": {label: y} (dashed horizontal lines), "ylim": (lo, hi) optional}; `marks`
    are x positions drawn as thin vertical lines (e.g. where a stage ends)."""
    w, h = size
    pad_l, pad_r, pad_t, pad_b = 46, 10, 22, 40
    img = Image.new("RGB", (w * len(panels), h), "white")
    d = ImageDraw.Draw(img)
    xs = np.asarray(x, float)
    x_lo, x_hi = (min([*xs, *marks]), max([*xs, *marks])) if len(xs) else (0.0, 1.0)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    for k, panel in enumerate(panels):
        ox = k * w
        values = [v for vs in panel["lines"].values() for v in vs if np.isfinite(v)] + list(panel.get("refs", {}).values())
        lo, hi = panel.get("ylim") or (min(values + [0.0]), max(values + [1e-9]) * 1.08)
        hi = hi if hi > lo else lo + 1
        px = lambda v, ox=ox: ox + pad_l + (v - x_lo) / (x_hi - x_lo) * (w - pad_l - pad_r)  # noqa: E731
        py = lambda v, lo=lo, hi=hi: pad_t + (1 - (v - lo) / (hi - lo)) * (h - pad_t - pad_b)  # noqa: E731
        d.rectangle([ox + pad_l, pad_t, ox + w - pad_r, h - pad_b], outline="black")
        d.text((ox + pad_l, 4), panel["title"], fill="black")
        for frac in (0.0, 0.5, 1.0):
            v = lo + frac * (hi - lo)
            d.text((ox + 2, py(v) - 6), f"{v:.3g}", fill="black")
        for frac in (0.0, 0.5, 1.0):
            v = x_lo + frac * (x_hi - x_lo)
            d.text((px(v) - 8, h - pad_b + 3), f"{v:.0f}", fill="black")
        d.text((ox + pad_l, h - 16), x_label, fill="black")
        for m in marks:
            d.line([px(m), pad_t, px(m), h - pad_b], fill=(190, 190, 190))
        legend_y = pad_t + 4
        for i, (label, y) in enumerate(panel.get("refs", {}).items()):
            colour = _COLOURS[-(i + 1) % len(_COLOURS)] if i else (120, 120, 120)
            for sx in range(int(px(x_lo)), int(px(x_hi)), 8):
                d.line([sx, py(y), sx + 4, py(y)], fill=colour)
            d.text((ox + w - pad_r - 150, py(y) - 11), label, fill=colour)
        for i, (label, vs) in enumerate(panel["lines"].items()):
            colour = _COLOURS[i % len(_COLOURS)]
            pts = [(px(a), py(b)) for a, b in zip(xs, vs, strict=True) if np.isfinite(b)]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=2)
            for p in pts:
                d.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
            d.text((ox + pad_l + 4, legend_y), label, fill=colour)
            legend_y += 11
    img.save(path)
