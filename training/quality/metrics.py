"""The figures of the sample-quality benchmark, each a pure function of images or features.

- `frechet_distance`: FID's formula (Heusel et al. 2017) on any features;
- `precision_recall`: improved precision and recall (Kynkäänniemi et al. 2019): a sample is
  "covered" when it falls inside the k-NN ball of some point of the other set;
- `diversity`: mean absolute pixel difference between faces drawn for the same conditions;
- `skin_luminance` / `skin_thirds`: how light the face's skin is, and how faces split into the
  data's light / mid / dark thirds of `skin_tone`;
- `gaussian_blur`: the blurred-real reference.
"""

from __future__ import annotations

import numpy as np

# The central box of an aligned 64×64 face (rows, columns as fractions of the size): mostly skin
# at every yaw the data has; its median ignores the eyes, brows and mouth inside it.
SKIN_BOX = ((0.42, 0.70), (0.36, 0.64))


def _sqrtm_trace(a: np.ndarray, b: np.ndarray) -> float:
    """tr((A B)^½) for symmetric PSD A, B, through the symmetric A^½ B A^½ (stable, no scipy)."""
    w, v = np.linalg.eigh(a)
    ra = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = ra @ b @ ra
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) between two feature sets [N, D]."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * _sqrtm_trace(s1, s2))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(d, 0, None))


def _covered(ref: np.ndarray, query: np.ndarray, k: int) -> float:
    """Share of `query` inside the union of `ref`'s k-NN balls."""
    radii = np.sort(_pairwise(ref, ref), axis=1)[:, k]  # column 0 is the point itself
    return float((_pairwise(query, ref) <= radii[None, :]).any(axis=1).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision: share of fakes on the real manifold, recall: share of reals on the fake one)."""
    return _covered(real, fake, k), _covered(fake, real, k)


def diversity(groups: np.ndarray) -> float:
    """Mean absolute difference in [0, 1] between every pair of faces within each group;
    groups: uint8 [G, M, H, W, 3] (M faces per group)."""
    x = groups.astype(np.float32) / 255.0
    total, pairs = 0.0, 0
    m = x.shape[1]
    for i in range(m):
        for j in range(i + 1, m):
            total += float(np.abs(x[:, i] - x[:, j]).mean(axis=(1, 2, 3)).sum())
            pairs += x.shape[0]
    return total / max(pairs, 1)


def skin_luminance(images: np.ndarray) -> np.ndarray:
    """Median Rec. 601 luminance in [0, 1] of each face's central skin box; uint8 [N, H, W, 3]."""
    h, w = images.shape[1:3]
    (r0, r1), (c0, c1) = SKIN_BOX
    box = images[:, int(r0 * h) : int(r1 * h), int(c0 * w) : int(c1 * w)].astype(np.float32) / 255.0
    lum = box @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.median(lum.reshape(len(images), -1), axis=1)


def thirds_thresholds(real_luminance: np.ndarray, real_skin_tone: np.ndarray) -> tuple[float, float]:
    """Luminance cut points that split real faces in the same shares as skin_tone's thirds
    (skin_tone 0 light … 1 dark, so darker thirds have lower luminance)."""
    light = float((real_skin_tone < 1 / 3).mean())
    dark = float((real_skin_tone >= 2 / 3).mean())
    return float(np.quantile(real_luminance, dark)), float(np.quantile(real_luminance, 1 - light))


def skin_thirds(luminance: np.ndarray, cuts: tuple[float, float]) -> dict[str, float]:
    """Share of faces in the light / mid / dark thirds."""
    lo, hi = cuts
    return {"light": float((luminance >= hi).mean()), "mid": float(((luminance >= lo) & (luminance < hi)).mean()),
            "dark": float((luminance < lo).mean())}


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 NHWC images blurred by a separable Gaussian of `sigma` pixels (edges repeated)."""
    r = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    x = images.astype(np.float32)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        x = sum(k[i] * np.take(xp, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)
