"""Distil the NVAE prior's repeated posterior-mean projection into the retouch's latent denoiser.

Targets: each training face's latent grid (the autoencoder's encoding of the face) projected
`passes` times by the prior (`LatentPrior.project`), conditioned on the conditions the face was
drawn for. Inputs: the same grid and the conditions the attribute model reads from the face,
which is all the retouch has at serving time. Loss: mean squared error on the normalised grid;
a tenth of the faces is held out to report how much of the projection's move the denoiser makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from training import loop
from training.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
from training.run_state import RunFolder


@dataclass(frozen=True)
class DenoiserTrainConfig:
    model: LatentDenoiserConfig = field(default_factory=LatentDenoiserConfig)
    # prior projections the denoiser stands in for (0: no denoiser, the retouch decodes the
    # autoencoder's own encoding); more passes move further, and each is more than the sampler's cost
    passes: int = 8
    # generated faces it learns from (their grids and projections); with half of these the
    # held-out error stood well above the training error
    faces: int = 24000
    batch_size: int = 64
    steps: int = 5000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    eval_every: int = 500
    val_fraction: float = 0.1
    seed: int = 0
    threads: int = 0


@torch.no_grad()
def distillation_set(prior, autoencoder, attributes, faces: np.ndarray, conditions: np.ndarray, passes: int,
                     batch: int = 250) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grids, conditions read by the attribute model, targets) for uint8 NHWC faces drawn for
    `conditions` [N, 5]."""
    grids, read, targets = [], [], []
    for i in range(0, len(faces), batch):
        x = torch.from_numpy(faces[i : i + batch]).float()
        c = torch.from_numpy(conditions[i : i + batch]).float()
        g = autoencoder.encode(x)
        grids.append(g)
        read.append(attributes(x))
        targets.append(prior.project(g, c, passes))
    return torch.cat(grids), torch.cat(read), torch.cat(targets)


def train_denoiser(prior, autoencoder, attributes, faces: np.ndarray, conditions: np.ndarray,
                   cfg: DenoiserTrainConfig, run: RunFolder, progress=None) -> tuple[LatentDenoiser, dict]:
    """The trained denoiser (eval mode) and its held-out figures: mean squared distance to the
    targets of the denoised grid and of the grid left as it is."""
    if cfg.passes < 1:
        raise ValueError("a denoiser stands in for at least one prior projection (passes ≥ 1)")
    n_val = max(1, int(len(faces) * cfg.val_fraction)) if len(faces) > 1 else 0
    train = slice(n_val, len(faces))
    if train.stop - train.start < 1:
        raise ValueError(f"the denoiser needs training faces (got {len(faces)})")
    # a finished run trains no further: only its held-out figures need targets (the projections
    # are most of the stage's time)
    needed = n_val if n_val and run.saved_step() >= cfg.steps else len(faces)
    grids, read, targets = distillation_set(prior, autoencoder, attributes, faces[:needed], conditions[:needed],
                                            cfg.passes)
    if grids.shape[1] != cfg.model.data_channels:
        raise ValueError(f"the autoencoder's grid has {grids.shape[1]} channels; the denoiser is configured for "
                         f"{cfg.model.data_channels} (denoiser.model.data_channels)")
    torch.manual_seed(cfg.seed)
    model = LatentDenoiser(cfg.model)

    def make_batch(step: int, gen: torch.Generator):
        i = torch.randint(train.start, train.stop, (cfg.batch_size,), generator=gen)
        g, c, t = grids[i], read[i], targets[i]
        if torch.rand((), generator=gen) < 0.5:  # a mirrored face projects to the mirrored grid
            g, t = g.flip(3), t.flip(3)
        return g, c, t

    def loss_fn(m, batch):
        g, c, t = batch
        return F.mse_loss(m(g, c), t)

    @torch.no_grad()
    def held_out(m) -> dict:
        if not n_val:
            return {}
        m.eval()
        return {"val_mse": float(F.mse_loss(m(grids[:n_val], read[:n_val]), targets[:n_val])),
                "val_mse_identity": float(F.mse_loss(grids[:n_val], targets[:n_val]))}

    model = loop.fit(model, loop.LoopConfig.of(cfg), run, make_batch, loss_fn, evaluate=held_out, progress=progress)
    return model.eval().requires_grad_(False), held_out(model)
