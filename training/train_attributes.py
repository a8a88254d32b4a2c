"""Train the attribute model on the hand labels only (the first N female images by file name).

The validation split is a hash of each file name. Evaluation also scores images *outside* the
hand-labelled N against the dataset's ground truth when it has one (the procedural set's
labels.csv) — never used for training, which sees hand_labels.csv alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from services.shared.conditions import CONDITIONS
from services.shared.dataset import Dataset
from training import loop
from training.data.loader import load_images, split_of
from training.data.preprocess import Preprocess
from training.models.attributes import ATTRIBUTE_PRESETS, AttributeConfig, AttributeNet
from training.run_state import RunFolder

HEAD = CONDITIONS.index("head")


@dataclass(frozen=True)
class AttributeTrainConfig:
    model: AttributeConfig = field(default_factory=AttributeConfig)
    batch_size: int = 64
    steps: int = 2500
    lr: float = 2e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 100
    seed: int = 0
    val_fraction: float = 0.1
    flip: bool = True  # mirrored faces are turned the other way: head → 1 − head
    huber_delta: float = 0.05  # loss: Huber on [0, 1] outputs, ≈ L1 (the MAE we report) past δ
    eval_every: int = 250
    eval_outside: int = 2000  # images outside the hand labels scored against ground truth, when known
    threads: int = 0


TRAIN_PRESETS = {
    "tiny": AttributeTrainConfig(model=ATTRIBUTE_PRESETS["tiny"], batch_size=32, steps=60, warmup_steps=5, eval_every=20),
    "default": AttributeTrainConfig(),
}


@dataclass
class LabelledImages:
    images: np.ndarray  # uint8 [N, H, W, 3]
    targets: np.ndarray  # float32 [N, 5]
    files: list[str]


def load_labelled(ds: Dataset, labels: dict[str, dict[str, float]], files: list[str], cfg: AttributeTrainConfig,
                  progress=None) -> tuple[LabelledImages, list]:
    pre = Preprocess(height=cfg.model.image_size, width=cfg.model.image_size)
    by_file = {r.file: r for r in ds.records}
    missing = [f for f in files if f not in by_file]
    records = [by_file[f] for f in files if f in by_file]
    images, kept, problems = load_images(records, pre, progress=progress)
    targets = np.array([[labels[r.file][c] for c in CONDITIONS] for r in kept], np.float32).reshape(-1, len(CONDITIONS))
    return LabelledImages(images, targets, [r.file for r in kept]), problems + missing


def split(data: LabelledImages, cfg: AttributeTrainConfig) -> dict[str, LabelledImages]:
    names = [split_of(f, cfg.seed, cfg.val_fraction, 0.0) for f in data.files]
    out = {}
    for s in ("train", "val"):
        idx = [i for i, n in enumerate(names) if n == s]
        out[s] = LabelledImages(data.images[idx], data.targets[idx], [data.files[i] for i in idx])
    return out


def attribute_loss(cfg: AttributeTrainConfig):
    def loss(model: AttributeNet, batch) -> torch.Tensor:
        images, targets = batch
        return F.huber_loss(model(images), targets, delta=cfg.huber_delta) / cfg.huber_delta
    return loss


def flip_batch(images: torch.Tensor, targets: torch.Tensor, gen: torch.Generator):
    """Mirror a random half of a uint8 NHWC batch; mirrored faces turn the other way."""
    flip = torch.rand(images.shape[0], generator=gen) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(2), images)
    targets = targets.clone()
    targets[flip, HEAD] = 1.0 - targets[flip, HEAD]
    return images, targets


@torch.no_grad()
def predict(model: AttributeNet, images: np.ndarray, batch: int = 256) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(images[i : i + batch])) for i in range(0, len(images), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, len(CONDITIONS)), np.float32)


def mae(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = np.abs(pred - truth).mean(axis=0) if len(truth) else np.full(len(CONDITIONS), np.nan)
    return {c: float(e) for c, e in zip(CONDITIONS, err, strict=True)}


def train(splits: dict[str, LabelledImages], cfg: AttributeTrainConfig, run: RunFolder, progress=None) -> AttributeNet:
    torch.manual_seed(cfg.seed)
    model = AttributeNet(cfg.model).to(memory_format=torch.channels_last)
    x = torch.from_numpy(splits["train"].images)
    y = torch.from_numpy(splits["train"].targets)
    if len(x) == 0:
        raise ValueError("no hand-labelled training images")

    def make_batch(step: int, gen: torch.Generator):
        idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
        return flip_batch(x[idx], y[idx], gen) if cfg.flip else (x[idx], y[idx])

    def evaluate(m: AttributeNet) -> dict:
        val = splits["val"]
        return {f"val_mae_{k}": v for k, v in mae(predict(m, val.images), val.targets).items()} if len(val.files) else {}

    loop_cfg = loop.LoopConfig.of(cfg)
    return loop.fit(model, loop_cfg, run, make_batch, attribute_loss(cfg), evaluate, progress)


def report(model: AttributeNet, splits: dict[str, LabelledImages], outside: LabelledImages | None, run: RunFolder) -> dict:
    """MAE per condition on the validation split and outside the hand labels; scatter PNG."""
    from training.plots import scatter_grid

    val = splits["val"]
    # no validation image (a handful of hand labels): null, not NaN, keeps metrics.json valid JSON
    result = {"counts": {k: len(v.files) for k, v in splits.items()}, "val_mae": None}
    panels = {}
    if len(val.files):
        pred = predict(model, val.images)
        result["val_mae"] = mae(pred, val.targets)
        panels = {"val": (val.targets, pred)}
    if outside is not None and len(outside.files):
        pred = predict(model, outside.images)
        result["outside_mae"] = mae(pred, outside.targets)
        result["outside_count"] = len(outside.files)
        panels = {"outside hand labels": (outside.targets, pred)}
    if panels:
        truth, pred = next(iter(panels.values()))
        scatter_grid(run.root / "scatter.png", truth, pred, CONDITIONS, title=next(iter(panels)))
    (run.root / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    torch.save(model.state_dict(), run.root / "model.pt")
    return result


def outside_files(ds: Dataset, truth: dict[str, dict[str, float]], hand: set[str], n: int, seed: int) -> list[str]:
    """Up to n files with ground truth that are not hand-labelled (a fixed random sample)."""
    present = {r.file for r in ds.records}
    pool = sorted(f for f in truth if f not in hand and f in present)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist()) if pool else []


def load_trained(run_dir: Path) -> tuple[AttributeNet, AttributeTrainConfig]:
    from training import run_state

    return run_state.load_trained(run_dir, AttributeTrainConfig, AttributeNet)


def export_spec(cfg: AttributeTrainConfig, version: str = "1"):
    """uint8 RGB NHWC images in, conditions [N, 5] in [0, 1] out (order in the signature)."""
    from services.shared.conditions import MEANING
    from training.export import TensorSpec, image_model_spec

    return image_model_spec(
        "attributes", version, cfg.model.image_size, seed=4321,
        outputs=(TensorSpec("conditions", "float32", ("batch", len(CONDITIONS)), (0.0, 1.0),
                            "the five conditions, in the order of `conditions`"),),
        extra={
            "conditions": list(CONDITIONS),
            "condition_meaning": MEANING,
            "regions": {"eye_box": list(cfg.model.eye_box), "mouth_box": list(cfg.model.mouth_box),
                        "used": cfg.model.region_features},
        },
    )
