"""The retouch's latent denoiser: one feed-forward pass that stands in for several of the NVAE
prior's posterior-mean projections of a face's latent grid.

Encoding a face with the prior's posterior and decoding the posterior mean top-down
(`LatentPrior.project`) moves its grid towards what the prior models; repeating it moves it
further, and the faces decoded from it come closer to real ones (tests/perf/RESULTS.md). Each
projection costs the prior's encoder and decoder, more than the sampler itself, so the retouch
cannot run them at serving time; this small residual U-Net over the grid is trained to map a grid
(and the face's conditions) to its projected grid, and costs a fraction of the sampler. The last
conv starts at zero: an untrained denoiser is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.models.layers import PreActBlock


@dataclass(frozen=True)
class LatentDenoiserConfig:
    data_channels: int = 4  # the autoencoder's latent_channels
    n_conditions: int = 5
    width: int = 48  # channels at the grid's resolution; doubled at each coarser level
    blocks: int = 6  # residual blocks per level (half before the coarser levels, half after)
    # coarser levels (each halves the resolution): the prior's projection sees the whole grid
    # through its 4×4 scale, which a few 3×3 blocks at 16×16 cannot
    levels: int = 2


class LatentDenoiser(nn.Module):
    """A residual U-Net over the grid (flat with levels = 0), conditions as constant input maps."""

    def __init__(self, cfg: LatentDenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = [cfg.width * 2**i for i in range(cfg.levels + 1)]
        before, after = (cfg.blocks + 1) // 2, cfg.blocks // 2
        if cfg.levels == 0:
            before, after = cfg.blocks, 0
        self.stem = nn.Conv2d(cfg.data_channels + cfg.n_conditions, w[0], 3, 1, 1)
        self.down_blocks = nn.ModuleList(nn.Sequential(*[PreActBlock(c) for _ in range(before)]) for c in w[:-1])
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 3, 2, 1) for a, b in zip(w, w[1:], strict=False))
        self.middle = nn.Sequential(*[PreActBlock(w[-1]) for _ in range(before)])
        self.ups = nn.ModuleList(nn.Conv2d(b, a, 3, 1, 1) for a, b in zip(w, w[1:], strict=False))
        self.up_blocks = nn.ModuleList(nn.Sequential(*[PreActBlock(c) for _ in range(after)]) for c in w[:-1])
        self.out = nn.Conv2d(w[0], cfg.data_channels, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, grid: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """The normalised grid [N, C, S, S] and the face's conditions [N, 5] → the projected grid."""
        maps = conditions[:, :, None, None].expand(-1, -1, grid.shape[2], grid.shape[3])
        h = self.stem(torch.cat([grid, maps], dim=1))
        skips = []
        for blocks, down in zip(self.down_blocks, self.downs, strict=True):
            h = blocks(h)
            skips.append(h)
            h = down(F.silu(h))
        h = self.middle(h)
        for i in reversed(range(len(self.ups))):
            h = self.up_blocks[i](skips[i] + self.ups[i](F.interpolate(h, scale_factor=2.0, mode="nearest")))
        return grid + self.out(F.silu(h))
