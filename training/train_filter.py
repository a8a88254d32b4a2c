"""Train the filter (P(female)) on the gender-labelled images, then calibrate it.

Splits are deterministic (a hash of each file name, or CelebA's own partition): `train` fits
the weights, `val` fits the temperature, `test` is reported before and after calibration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from services.shared.dataset import Dataset
from training import calibration, loop
from training.data.loader import load_images, split_of
from training.data.preprocess import Preprocess
from training.models.filter import FILTER_PRESETS, FilterConfig, FilterNet
from training.run_state import RunFolder


@dataclass(frozen=True)
class FilterTrainConfig:
    model: FilterConfig = field(default_factory=FilterConfig)
    batch_size: int = 128
    steps: int = 1500
    lr: float = 3e-3  # AdamW peak learning rate
    weight_decay: float = 5e-4
    warmup_steps: int = 100
    seed: int = 0
    val_fraction: float = 0.1  # temperature is fitted here
    test_fraction: float = 0.1  # figures are reported here
    flip: bool = True  # gender does not change under a mirror
    brightness: float = 0.15  # multiply by U(1 − b, 1 + b)
    eval_every: int = 250
    threads: int = 0  # torch intra-op threads; 0 = torch's default


TRAIN_PRESETS = {
    "tiny": FilterTrainConfig(model=FILTER_PRESETS["tiny"], batch_size=32, steps=40, warmup_steps=5, eval_every=20),
    "default": FilterTrainConfig(),
}


@dataclass
class Splits:
    images: dict[str, np.ndarray]  # split → uint8 [N, H, W, 3]
    labels: dict[str, np.ndarray]  # split → float32 [N] (1 = female)


def load_splits(ds: Dataset, cfg: FilterTrainConfig, progress=None) -> tuple[Splits, list]:
    pre = Preprocess(height=cfg.model.image_size, width=cfg.model.image_size)
    images, records, problems = load_images(ds.labelled, pre, progress=progress)
    names = [r.split or split_of(r.file, cfg.seed, cfg.val_fraction, cfg.test_fraction) for r in records]
    labels = np.array([r.female for r in records], np.float32)
    out = Splits({}, {})
    for s in ("train", "val", "test"):
        idx = np.array([i for i, n in enumerate(names) if n == s], dtype=np.int64)
        out.images[s], out.labels[s] = images[idx], labels[idx]
    return out, problems


def augment_batch(images: torch.Tensor, gen: torch.Generator, cfg: FilterTrainConfig) -> torch.Tensor:
    """Random mirror and brightness on a uint8 NHWC batch (stays uint8, like the model's input)."""
    n = images.shape[0]
    if cfg.flip:
        flip = torch.rand(n, generator=gen) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(2), images)
    if cfg.brightness > 0:
        factor = 1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.brightness
        images = (images.float() * factor[:, None, None, None]).round().clamp(0, 255).to(torch.uint8)
    return images


def filter_loss(model: FilterNet, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    images, labels = batch
    return F.binary_cross_entropy_with_logits(model.logits(images), labels)


def train_step(model: FilterNet, batch: tuple[torch.Tensor, torch.Tensor], opt: torch.optim.Optimizer) -> dict:
    return loop.train_step(model, batch, opt, filter_loss)


@torch.no_grad()
def predict_logits(model: FilterNet, images: np.ndarray, batch: int = 256) -> np.ndarray:
    model.eval()
    out = [model.logits(torch.from_numpy(images[i : i + batch])) for i in range(0, len(images), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def train(splits: Splits, cfg: FilterTrainConfig, run: RunFolder, progress=None) -> FilterNet:
    """Train (resuming from run/state.pt if present); the temperature is set later by calibration."""
    torch.manual_seed(cfg.seed)
    model = FilterNet(cfg.model).to(memory_format=torch.channels_last)
    x_train = torch.from_numpy(splits.images["train"])
    y_train = torch.from_numpy(splits.labels["train"])
    female = int(y_train.sum())
    if female == 0 or female == len(y_train):
        raise ValueError(f"the filter learns from both genders, but its train split holds {female} female and "
                         f"{len(y_train) - female} male images: add gender-labelled images of the missing kind")

    def make_batch(step: int, gen: torch.Generator):
        idx = torch.randint(len(x_train), (cfg.batch_size,), generator=gen)
        return augment_batch(x_train[idx], gen, cfg), y_train[idx]

    def evaluate(m: FilterNet) -> dict:
        if not len(splits.images["val"]):
            return {}
        val = calibration.metrics(predict_logits(m, splits.images["val"]), splits.labels["val"])
        return {f"val_{k}": v for k, v in val.items()}

    loop_cfg = loop.LoopConfig.of(cfg)
    return loop.fit(model, loop_cfg, run, make_batch, filter_loss, evaluate, progress)


def calibrate_and_report(model: FilterNet, splits: Splits, run: RunFolder) -> dict:
    """Fit the temperature on val, report test metrics before/after, draw the reliability diagram."""
    val_logits, val_y = predict_logits(model, splits.images["val"]), splits.labels["val"]
    # a temperature fitted on one gender alone would only push every probability toward it
    calibrated = 0 < val_y.sum() < len(val_y)
    t = calibration.fit_temperature(val_logits, val_y) if calibrated else 1.0
    model.temperature.fill_(t)
    test_logits = predict_logits(model, splits.images["test"])
    y = splits.labels["test"]
    report = {
        "temperature": t,
        "calibrated": bool(calibrated),
        "counts": {s: int(len(v)) for s, v in splits.labels.items()},
        "test_before": calibration.metrics(test_logits, y, 1.0) if len(y) else None,
        "test_after": calibration.metrics(test_logits, y, t) if len(y) else None,
    }
    if not calibrated:
        report["warning"] = (f"not calibrated: the validation split holds {int(val_y.sum())} female and "
                             f"{int(len(val_y) - val_y.sum())} male images (it needs both); P(female) is the "
                             "uncalibrated model's. Add labelled images or raise --set val_fraction=…")
    if len(y):
        calibration.reliability_diagram(
            run.root / "reliability.png",
            y,
            {"before": calibration.sigmoid(test_logits), f"after (T={t:.2f})": calibration.sigmoid(test_logits / t)},
        )
    (run.root / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    torch.save(model.state_dict(), run.root / "model.pt")
    return report


def load_trained(run_dir: Path) -> tuple[FilterNet, FilterTrainConfig]:
    from training import run_state

    return run_state.load_trained(run_dir, FilterTrainConfig, FilterNet)


def export_spec(cfg: FilterTrainConfig, version: str = "1"):
    """The filter's signature: uint8 RGB NHWC images in, calibrated P(female) out."""
    from training.export import TensorSpec, image_model_spec

    return image_model_spec(
        "filter", version, cfg.model.image_size,
        outputs=(TensorSpec("p_female", "float32", ("batch",), (0.0, 1.0), "calibrated P(female)"),),
        extra={"decision": {"default_threshold": 0.9, "calibration": "temperature scaling (in graph)"}},
    )
