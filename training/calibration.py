"""Binary-classifier metrics and temperature scaling (Guo et al. 2017, "On Calibration of
Modern Neural Networks"): one scalar T fitted on held-out logits by minimising the NLL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """T > 0 minimising the NLL of σ(logit / T) on held-out data (optimised in log T)."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of P(positive), `bins` equal-width confidence bins.

    Binary form: confidence = max(p, 1 − p), correct = (p ≥ 0.5) == label.
    """
    conf = np.maximum(probs, 1 - probs)
    correct = (probs >= 0.5) == (labels > 0.5)
    edges = np.linspace(0.5, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties get average ranks)."""
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metrics(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict[str, float | None]:
    """Accuracy, ROC-AUC, NLL and ECE of P = σ(logits / T); None where undefined (ROC-AUC of one
    class), so that the report stays valid JSON. Needs at least one example."""
    if not len(labels):
        raise ValueError("metrics of an empty set")
    p = np.clip(sigmoid(logits / temperature), 1e-7, 1 - 1e-7)
    y = labels.astype(np.float64)
    auc = roc_auc(p, y)
    return {
        "accuracy": float(((p >= 0.5) == (y > 0.5)).mean()),
        "roc_auc": auc if np.isfinite(auc) else None,
        "nll": float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()),
        "ece": ece(p, y),
        "n": int(len(y)),
    }


def reliability_diagram(
    path: Path, labels: np.ndarray, curves: dict[str, np.ndarray], bins: int = 15, size: int = 480
) -> None:
    """Accuracy vs confidence per bin for each named set of probabilities, as a PNG (Pillow only)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    pad = 48
    span = size - 2 * pad

    def xy(conf: float, acc: float) -> tuple[float, float]:
        return pad + (conf - 0.5) / 0.5 * span, size - pad - (acc - 0.5) / 0.5 * span

    d.rectangle([pad, pad, size - pad, size - pad], outline="black")
    d.line([xy(0.5, 0.5), xy(1.0, 1.0)], fill=(150, 150, 150), width=1)
    for t in np.linspace(0.5, 1.0, 6):
        x, _ = xy(t, 0.5)
        _, y = xy(0.5, t)
        d.text((x - 10, size - pad + 6), f"{t:.1f}", fill="black")
        d.text((6, y - 6), f"{t:.1f}", fill="black")
    d.text((size / 2 - 40, size - 20), "confidence", fill="black")
    d.text((6, 12), "accuracy per bin (diagonal = calibrated)", fill="black")
    colours = [(220, 60, 60), (40, 110, 220), (40, 160, 80)]
    edges = np.linspace(0.5, 1.0, bins + 1)
    for k, (name, p) in enumerate(curves.items()):
        conf = np.maximum(p, 1 - p)
        correct = (p >= 0.5) == (labels > 0.5)
        idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
        colour = colours[k % len(colours)]
        for b in range(bins):
            m = idx == b
            if not m.any():
                continue
            # marker area grows with the bin's count; bins below 50 % accuracy sit on the frame
            x, y = xy(conf[m].mean(), max(0.5, correct[m].mean()))
            r = 2 + 2.5 * np.log10(m.sum())
            d.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=2)
            d.text((x - 8, size - pad - 14 - 12 * k), str(int(m.sum())), fill=colour)
        d.text((pad + 8, pad + 8 + 14 * k), f"{name}: ECE {ece(p, labels, bins):.4f}", fill=colour)
    d.text((pad + 8, pad + 8 + 14 * len(curves)), "circle area ~ log(count); numbers: images per bin", fill="black")
    img.save(path)
