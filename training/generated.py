"""Faces from an exported generator, under ONNX Runtime: the samples the critic learns to tell
apart from real images are the very ones the sampler service serves. `torch_draw` draws the same
way from a sampler still in PyTorch (probes of a network before it is exported).

A seed becomes a face by the rule the sampler service follows (services/shared/sampling.py), so
training-side faces are the served ones for the same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.shared.sampling import noise_for
from training.export import open_export


class OnnxGenerator:
    def __init__(self, export_dir: Path | str, threads: int = 0) -> None:
        self.signature, self.session = open_export(export_dir, threads)
        self.shapes = [tuple(s) for s in self.signature["latent_groups"]]
        self.image_size = int(self.signature["image"]["height"])

    def __call__(self, conditions: np.ndarray, temperature: float, seeds: np.ndarray, batch: int = 128) -> np.ndarray:
        """uint8 NHWC faces, one per row of `conditions`, face i drawn with seeds[i]."""
        out = []
        for i in range(0, len(conditions), batch):
            noise = [noise_for(int(s), self.shapes) for s in seeds[i : i + batch]]
            feeds = {"conditions": conditions[i : i + batch].astype(np.float32),
                     "temperature": np.array(temperature, np.float32)}
            for g in range(len(self.shapes)):
                feeds[f"noise_{g}"] = np.stack([z[g] for z in noise])
            out.append(self.session.run(["images"], feeds)[0])
        return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)

    @staticmethod
    def pool_conditions(condition_pool: np.ndarray, n: int, seed: int) -> np.ndarray:
        """The conditions `pool` draws its n faces for with this seed."""
        return condition_pool[np.random.default_rng(seed).integers(0, len(condition_pool), n)]

    def pool(self, condition_pool: np.ndarray, n: int, temperatures: tuple[float, ...], seed: int) -> np.ndarray:
        """n faces with conditions drawn from `condition_pool` (the real images' conditions, so
        real and generated differ only in how they look), temperatures taken in turn, seeds
        seed … seed + n − 1."""
        cond = self.pool_conditions(condition_pool, n, seed)
        seeds = np.arange(seed, seed + n)
        images = np.empty((n, self.image_size, self.image_size, 3), np.uint8)
        for k, t in enumerate(temperatures):
            rows = np.arange(k, n, len(temperatures))
            images[rows] = self(cond[rows], t, seeds[rows])
        return images


def torch_draw(sampler, batch: int = 250):
    """`draw(conditions, temperature, seeds)` → uint8 NHWC faces from a PyTorch sampler (a
    `TwoStageSampler`), face i drawn with seeds[i] by the service's rule, as `OnnxGenerator` draws."""
    import torch

    shapes = [tuple(s) for s in sampler.group_shapes]

    @torch.no_grad()
    def draw(conditions: np.ndarray, temperature: float, seeds: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(conditions), batch):
            noise = [noise_for(int(s), shapes) for s in seeds[i : i + batch]]
            zs = [torch.from_numpy(np.stack([z[g] for z in noise])) for g in range(len(shapes))]
            cond = torch.from_numpy(np.asarray(conditions[i : i + batch], np.float32))
            out.append(sampler.sample(cond, zs, temperature).numpy())
        return np.concatenate(out)

    return draw
