"""Compact checkpoints of the generator's runs (training/checkpoints/): what a later run or a fresh
machine starts from, small enough to commit. A stage-2 run folder (state.pt with its EMA) becomes
its EMA weights in fp16 (ema_fp16.pt, read back by `train_generator.ema_weights`) beside its
config.json; a stage-1 or stage-3 run folder (model.pt: EMA weights and the latent normalisation)
is kept as it is, in fp32 (the decoder's last layers draw the pixels, and the shipped export is
built from exactly these weights)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def compact_checkpoint(run: Path, out: Path) -> list[Path]:
    """Write `run`'s compact checkpoint into `out` (created); returns the files written."""
    run, out = Path(run), Path(out)
    if not (run / "config.json").exists():
        raise ValueError(f"{run}/config.json not found: not a run folder of `facegen-train`")
    if (run / "model.pt").exists():
        out.mkdir(parents=True, exist_ok=True)
        weights = Path(shutil.copyfile(run / "model.pt", out / "model.pt"))
    elif (run / "state.pt").exists():
        from training.train_generator import ema_weights

        out.mkdir(parents=True, exist_ok=True)
        weights = out / "ema_fp16.pt"
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in ema_weights(run).items()}, weights)
    else:
        raise ValueError(f"{run} holds neither model.pt (stages 1 and 3) nor state.pt (stage 2): nothing to keep")
    return [weights, Path(shutil.copyfile(run / "config.json", out / "config.json"))]
