"""Evaluate a trained generator: held-out bits/dim, KL per group and active units, sample grids
at several temperatures, a condition-sweep grid, and condition fidelity measured by the exported
attribute model (never by the generator itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from services.shared.conditions import CONDITIONS
from services.shared.sampling import DEFAULT_TEMPERATURE, around_default
from training import losses
from training.models.generator import AttributeGenerator


def noise_for(model: AttributeGenerator, n: int, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.standard_normal((n, *s), dtype=np.float32)) for s in model.group_shapes]


@torch.no_grad()
def held_out(model: AttributeGenerator, images: np.ndarray, conditions: np.ndarray, batch: int = 32) -> dict:
    """Negative ELBO in bits/dim, mean KL per group (nats) and the active groups (mean KL above
    0.1 nats: a group below it carries no information and has collapsed to its prior)."""
    model.eval()
    total, kl_sum, n = 0.0, None, 0
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch])
        c = torch.from_numpy(conditions[i : i + batch].astype(np.float32))
        params, kls = model(x, c)
        xf = x.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
        total += float((losses.dmol_nll(xf, params, model.cfg.mixtures) + torch.stack(kls, 1).sum(1)).sum())
        k = torch.stack(kls, 1).sum(0)
        kl_sum = k if kl_sum is None else kl_sum + k
        n += len(x)
    dims = int(np.prod(images.shape[1:]))
    kl = (kl_sum / n).tolist() if kl_sum is not None else []
    return {"bits_per_dim": total / n / (dims * np.log(2)), "kl_per_group": kl,
            "active_groups": sum(k > 0.1 for k in kl), "groups": len(kl), "n": n}


def grid(images: np.ndarray, cols: int) -> Image.Image:
    rows = [np.concatenate(list(images[r * cols : (r + 1) * cols]), axis=1) for r in range(len(images) // cols)]
    return Image.fromarray(np.concatenate(rows, axis=0))


# the grids show what a user gets when the temperature is left out, and two cooler rows beside it
GRID_TEMPERATURES = around_default(-0.4, -0.2, 0.0)


@torch.no_grad()
def sample_grids(model: AttributeGenerator, out: Path, seed: int = 0, n: int = 8) -> list[Path]:
    """Random-condition samples at GRID_TEMPERATURES (one row each, same noise and conditions),
    and a sweep at the default temperature: each condition from 0 to 1 with the others at 0.5."""
    model.eval()
    rng = np.random.default_rng(seed)
    cond = torch.from_numpy(rng.random((n, len(CONDITIONS)), dtype=np.float32))
    noise = noise_for(model, n, seed)
    rows = [model.sample(cond, noise, t).numpy() for t in GRID_TEMPERATURES]
    paths = [out / f"samples_t{'-'.join(f'{t:g}' for t in GRID_TEMPERATURES)}.png"]
    grid(np.concatenate(rows), n).save(paths[0])
    sweep = []
    base_noise = [z[:1].expand(n, *z.shape[1:]) for z in noise_for(model, 1, seed + 1)]
    for k in range(len(CONDITIONS)):
        c = torch.full((n, len(CONDITIONS)), 0.5)
        c[:, k] = torch.linspace(0, 1, n)
        sweep.append(model.sample(c, base_noise, DEFAULT_TEMPERATURE).numpy())
    paths.append(out / "condition_sweep.png")
    grid(np.concatenate(sweep), n).save(paths[1])
    return paths


@torch.no_grad()
def condition_fidelity(model: AttributeGenerator, attribute_export: Path, n: int = 256, seed: int = 0,
                       temperature: float = DEFAULT_TEMPERATURE) -> dict:
    """MAE between requested conditions and what the exported attribute model measures on the
    generated faces."""
    from training.select import OnnxImageModel

    measure = OnnxImageModel(attribute_export)
    model.eval()
    rng = np.random.default_rng(seed)
    cond = rng.random((n, len(CONDITIONS)), dtype=np.float32)
    images = model.sample(torch.from_numpy(cond), noise_for(model, n, seed + 7), temperature).numpy()
    got = measure(images)
    err = np.abs(got - cond).mean(axis=0)
    return {"mae": {c: float(e) for c, e in zip(CONDITIONS, err, strict=True)}, "mean_mae": float(err.mean()),
            "n": n, "temperature": temperature}
