"""Judge the critic and the retouch.

The retouch is never judged by the critic it trained against: `retouch_report` scores faces
before and after with the independent critic B. Pixel changes are in 0..255 units; a pixel
"changed" when any of its channels moved by more than 8. Condition drift is measured by the
exported attribute model (what the services run) when one is given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.models.critic import Critic, upsample_map
from training.models.refiner import Retouch

CHANGED = 8  # 0..255: a pixel moved more than this counts as changed


@torch.no_grad()
def score(critic: Critic, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(realness [N], realness_map [N, R, R]) for uint8 NHWC images."""
    critic.eval()
    parts = [critic(torch.from_numpy(images[i : i + batch])) for i in range(0, len(images), batch)]
    return torch.cat([p[0] for p in parts]).numpy(), torch.cat([p[1] for p in parts]).numpy()


@torch.no_grad()
def retouch(model: Retouch, images: np.ndarray, batch: int = 128) -> np.ndarray:
    model.eval()
    return np.concatenate([model(torch.from_numpy(images[i : i + batch])).numpy() for i in range(0, len(images), batch)])


def auc(real: np.ndarray, fake: np.ndarray) -> float:
    """P(score of a random real image > that of a random generated one) (Mann-Whitney U)."""
    both = np.concatenate([real, fake])
    ranks = np.empty(len(both))
    ranks[np.argsort(both, kind="stable")] = np.arange(1, len(both) + 1)
    return float((ranks[: len(real)].sum() - len(real) * (len(real) + 1) / 2) / (len(real) * len(fake)))


def separation(critic: Critic, real: np.ndarray, fake: np.ndarray) -> dict:
    r, f = score(critic, real)[0], score(critic, fake)[0]
    acc = (np.sum(r >= 0.5) + np.sum(f < 0.5)) / (len(r) + len(f))
    return {"auc": auc(r, f), "accuracy": float(acc), "mean_realness_real": float(r.mean()),
            "mean_realness_generated": float(f.mean()), "n_real": len(r), "n_generated": len(f)}


def pixel_change(before: np.ndarray, after: np.ndarray) -> dict:
    d = np.abs(after.astype(np.int16) - before.astype(np.int16))
    return {"mean_abs_change": float(d.mean()), "fraction_changed": float((d.max(axis=-1) > CHANGED).mean())}


FLAGGED_BELOW = 0.5  # a region the critic calls generated: realness below this


def share_inside_flagged(realness_map: torch.Tensor, change: torch.Tensor) -> float:
    """The share of a change's absolute mass (NHWC, any units) that falls in regions the map
    [N, R, R] calls generated, pixels weighted by how far they moved."""
    flagged = (upsample_map(realness_map, change.shape[1])[:, 0] < FLAGGED_BELOW)[..., None]
    mass = change.abs().double()
    return float((mass * flagged).sum() / mass.sum().clamp_min(1e-9))


def change_inside_flagged(model, before: np.ndarray, after: np.ndarray) -> float:
    """The share of the retouch's absolute change that falls in regions the retouch's own critic
    calls generated (realness < 0.5)."""
    with torch.no_grad():
        maps = torch.cat([model.critic(torch.from_numpy(before[i : i + 256]))[1] for i in range(0, len(before), 256)])
    return share_inside_flagged(maps, torch.from_numpy(after.astype(np.float64) - before))


def retouch_report(model: Retouch, judge: Critic, generated: np.ndarray, real: np.ndarray,
                   measure: Callable[[np.ndarray], np.ndarray],
                   independent: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[dict, np.ndarray]:
    """Figures for the retouch of held-out generated faces (and of real ones, which should barely
    move); also returns the retouched generated faces. `independent`: an attribute judge that
    took no part in training anything here, for the condition drift it sees."""
    after = retouch(model, generated)
    before_r, after_r = score(judge, generated)[0], score(judge, after)[0]
    drift = np.abs(measure(after) - measure(generated)).mean(axis=0)
    report = {
        "n": len(generated),
        "independent_realness_rose": float((after_r > before_r).mean()),
        "independent_realness_before": float(before_r.mean()),
        "independent_realness_after": float(after_r.mean()),
        **pixel_change(generated, after),
        "condition_drift_mae": float(drift.mean()),
        "condition_drift_per_condition": drift.tolist(),
        "change_inside_flagged": change_inside_flagged(model, generated, after),
    }
    if independent is not None:
        judged = np.abs(independent(after) - independent(generated)).mean(axis=0)
        report["independent_condition_drift_mae"] = float(judged.mean())
        report["independent_condition_drift_per_condition"] = judged.tolist()
    if len(real):
        report["real_images"] = pixel_change(real, retouch(model, real))
    return report, after


def overlay(images: np.ndarray, realness_map: np.ndarray) -> np.ndarray:
    """Tint low-realness regions red (strength = 1 − realness)."""
    size = images.shape[1]
    weight = upsample_map(torch.from_numpy(realness_map), size)[:, 0].numpy()[..., None]
    red = np.array([255.0, 0.0, 0.0])
    return (images * (1 - 0.6 * (1 - weight)) + red * 0.6 * (1 - weight)).clip(0, 255).astype(np.uint8)


def before_after_grid(judge: Critic, before: np.ndarray, after: np.ndarray, path: Path, n: int = 8, zoom: int = 2) -> Path:
    """Rows: generated, its realness map, retouched, its realness map (critic B), n faces each."""
    before, after = before[:n], after[:n]
    rows = [before, overlay(before, score(judge, before)[1]), after, overlay(after, score(judge, after)[1])]
    img = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    Image.fromarray(img).resize((img.shape[1] * zoom, img.shape[0] * zoom), Image.Resampling.NEAREST).save(path)
    return path
