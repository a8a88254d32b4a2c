"""Stage 2 of the generator: a conditional NVAE over the autoencoder's latent grid.

The same hierarchy as NVAE (`nvae_hierarchy.Hierarchy`: residual-normal groups, top-down decoding
conditioned on the five attributes), but its data is the autoencoder's normalised 16×16×4 grid
instead of 12,288 pixels, and its output a diagonal Gaussian over that grid. Sampling takes the
Gaussian's mean: the grid's per-cell noise is not a latent group, so leaving it out keeps all
randomness in the explicit noise inputs.

`TwoStageSampler` is the exported generator: prior (conditions, temperature, one noise tensor per
group) → grid → its `Refinement` → autoencoder decoder → uint8 RGB NHWC, the same contract as the
single-stage one.
`Encoder` is the exported encoder (image + conditions → each group's posterior mean), which
editing a user's face needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from training.models.autoencoder import Autoencoder
from training.models.generator import to_uint8
from training.models.layers import as_faces
from training.models.nvae_cells import soft_clamp
from training.models.nvae_hierarchy import Hierarchy, LatentScale


@dataclass(frozen=True)
class LatentPriorConfig:
    grid_size: int = 16  # the autoencoder's latent_size
    data_channels: int = 4  # the autoencoder's latent_channels
    n_conditions: int = 5
    # coarsest first; the finest must be grid_size
    scales: tuple[LatentScale, ...] = field(default_factory=lambda: (
        LatentScale(4, 3, 96), LatentScale(8, 3, 96), LatentScale(16, 2, 96)))
    latent_channels: int = 8
    expand: int = 3


LATENT_PRIOR_PRESETS = {
    "tiny": LatentPriorConfig(scales=(LatentScale(8, 1, 16), LatentScale(16, 1, 16)), latent_channels=4, expand=2),
    "default": LatentPriorConfig(),
    # NVAE's CelebA-64 depth (20 / 10 / 5 groups), over the grid; for a GPU
    "celeba64": LatentPriorConfig(scales=(LatentScale(4, 20, 128), LatentScale(8, 10, 128), LatentScale(16, 5, 128)),
                                  latent_channels=20),
}


class LatentPrior(nn.Module):
    def __init__(self, cfg: LatentPriorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        fine = cfg.scales[-1]
        if fine.resolution != cfg.grid_size:
            raise ValueError(f"the finest latent scale ({fine.resolution}) must be the grid size ({cfg.grid_size})")
        self.stem = nn.Conv2d(cfg.data_channels + cfg.n_conditions, fine.channels, 3, padding=1)
        self.hier = Hierarchy(cfg.scales, cfg.n_conditions, cfg.latent_channels, cfg.expand)
        self.head = nn.Sequential(nn.ELU(), nn.Conv2d(fine.channels, 2 * cfg.data_channels, 3, padding=1))

    @property
    def group_shapes(self) -> list[tuple[int, int, int]]:
        return self.hier.group_shapes

    def encode(self, grid: torch.Tensor, cond: torch.Tensor) -> list[torch.Tensor]:
        maps = cond[:, :, None, None].expand(-1, -1, grid.shape[2], grid.shape[3])
        return self.hier.encode(F.silu(self.stem(torch.cat([grid, maps], dim=1))))

    def forward(self, grid: torch.Tensor, conditions: torch.Tensor, prior_conditions: torch.Tensor | None = None,
                prior_noise: list[torch.Tensor] | None = None, prior_temperature: float = 1.0):
        """Training pass: (Gaussian NLL of the grid per item [N] in nats, KL per group [N] each).

        With `prior_conditions`, also the grids sampled from the prior for them (noise given), as
        a third value: the condition-consistency term needs them, and under DDP every loss must
        come out of forward."""
        h, kls = self.hier.top_down(conditions, self.encode(grid, conditions), None)
        mean, log_scale = self.head(h).chunk(2, dim=1)
        log_scale = soft_clamp(log_scale, 7.0)
        nll = 0.5 * ((grid - mean) * torch.exp(-log_scale)).pow(2) + log_scale + 0.5 * math.log(2 * math.pi)
        if prior_conditions is None:
            return nll.flatten(1).sum(dim=1), kls
        return nll.flatten(1).sum(dim=1), kls, self.sample(prior_conditions, prior_noise, prior_temperature)

    def sample(self, conditions: torch.Tensor, noise: list[torch.Tensor], temperature: torch.Tensor | float = 1.0):
        """The grid's mean given prior samples of every group."""
        h, _ = self.hier.top_down(conditions, None, noise, temperature)
        return self.head(h).chunk(2, dim=1)[0]

    def project(self, grid: torch.Tensor, conditions: torch.Tensor, passes: int = 1) -> torch.Tensor:
        """The grid's posterior-mean reconstruction: every group's latents at the posterior's mean,
        decoded top-down to the grid's mean, `passes` times in a row (what the retouch's latent
        denoiser learns to do)."""
        for _ in range(passes):
            h, _ = self.hier.top_down(conditions, self.encode(grid, conditions), None, posterior_mean=True)
            grid = self.head(h).chunk(2, dim=1)[0]
        return grid

    def posterior_noise(self, grid: torch.Tensor, conditions: torch.Tensor) -> list[torch.Tensor]:
        """Per group, the noise that redraws this grid's posterior-mean latents through `sample`
        at temperature 1 (the encoder an edit needs: decode it with other conditions)."""
        return self.hier.top_down(conditions, self.encode(grid, conditions), None, posterior_mean=True)[1]


@dataclass(frozen=True)
class Refinement:
    """What the sampler does to a drawn grid before the face is decoded. The prior's samples sit
    further from the faces it models than the encodings of real faces do. Each pass decodes the
    grid to a face and encodes that face again (`round_trip`: onto what the encoder makes of
    faces; unrounded, so ONNX Runtime and PyTorch do not part at a rounding boundary), then takes
    the prior's posterior-mean projection (`LatentPrior.project`: towards what the prior models).
    The noise still decides the face: a pass keeps what the grid shows and redraws nothing."""
    passes: int = 4  # 0 = the grid as drawn
    round_trip: bool = True


class TwoStageSampler(nn.Module):
    """The exported generator: conditions [N, 5], temperature [], noise per group → uint8 faces."""

    def __init__(self, prior: LatentPrior, autoencoder: Autoencoder, refinement: Refinement = Refinement()) -> None:
        super().__init__()
        self.prior, self.autoencoder, self.refinement = prior, autoencoder, refinement

    @property
    def group_shapes(self) -> list[tuple[int, int, int]]:
        return self.prior.group_shapes

    def sample(self, conditions: torch.Tensor, noise: list[torch.Tensor], temperature: torch.Tensor | float = 1.0):
        return to_uint8(self.autoencoder.decode(self.refine(self.prior.sample(conditions, noise, temperature), conditions)))

    def refine(self, grid: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        for _ in range(self.refinement.passes):
            if self.refinement.round_trip:
                grid = self.autoencoder.encode(as_faces(self.autoencoder.decode(grid)))
            grid = self.prior.project(grid, conditions)
        return grid

    def forward(self, conditions: torch.Tensor, temperature: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        return self.sample(conditions, list(noise), temperature)


class Encoder(nn.Module):
    """The exported encoder: uint8 RGB NHWC faces + their conditions → per group the noise that
    redraws them through `TwoStageSampler` at temperature 1 (posterior means; the sampler refines
    the redrawn grid as it refines every face)."""

    def __init__(self, prior: LatentPrior, autoencoder: Autoencoder) -> None:
        super().__init__()
        self.prior, self.autoencoder = prior, autoencoder

    def forward(self, images: torch.Tensor, conditions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.prior.posterior_noise(self.autoencoder.encode(images), conditions))
