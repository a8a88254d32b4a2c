"""NVAE's latent hierarchy (Vahdat & Kautz 2020, §3), built in one place from data.

`LatentScale`s list each scale (resolution, groups, channels), coarsest first. `Hierarchy` holds
the bottom-up encoder cells over those scales and the top-down decoder: group by group it predicts
the prior p(z_l | z_<l, c) and, in training, the residual posterior q = N(μp + Δμ, σp·Δσ)
(NVAE eq. 2). The conditions enter the first decoder state and every decoder cell (conditional
BatchNorm): the CVAE. What the data is (pixels, or an autoencoder's latent grid) is the caller's:
it maps its data to features at the finest scale and the finest decoder state back to its output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.models.nvae_cells import DecoderCell, Down, EncoderCell, Up, soft_clamp


@dataclass(frozen=True)
class LatentScale:
    resolution: int  # spatial size of this scale's latents and features
    groups: int  # latent groups at this scale (each with its own prior and posterior)
    channels: int  # feature channels of the encoder/decoder at this scale


class Hierarchy(nn.Module):
    def __init__(self, scales: tuple[LatentScale, ...], n_conditions: int, latent_channels: int, expand: int) -> None:
        super().__init__()
        if any(b.resolution != 2 * a.resolution for a, b in zip(scales, scales[1:], strict=False)):
            raise ValueError("latent scales must double in resolution, coarsest first")
        self.scales, self.latent_channels = tuple(scales), latent_channels
        top, lat = scales[0], latent_channels
        self.enc_cells = nn.ModuleList()  # finest scale first, one cell per group
        self.enc_down = nn.ModuleList()
        for i, s in enumerate(reversed(scales)):
            self.enc_cells.append(nn.ModuleList(EncoderCell(s.channels) for _ in range(s.groups)))
            if i + 1 < len(scales):
                self.enc_down.append(Down(s.channels, scales[-2 - i].channels))
        self.h0 = nn.Parameter(torch.zeros(1, top.channels, top.resolution, top.resolution))
        self.h0_cond = nn.Linear(n_conditions, top.channels)  # the conditions enter the first decoder state
        self.prior = nn.ModuleList()
        self.posterior = nn.ModuleList()
        self.combine = nn.ModuleList()
        self.dec_cells = nn.ModuleList()
        self.dec_up = nn.ModuleList()
        for i, s in enumerate(scales):
            for _ in range(s.groups):
                self.prior.append(nn.Sequential(nn.ELU(), nn.Conv2d(s.channels, 2 * lat, 3, padding=1)))
                self.posterior.append(nn.Conv2d(2 * s.channels, 2 * lat, 3, padding=1))
                self.combine.append(nn.Conv2d(s.channels + lat, s.channels, 1))
                self.dec_cells.append(DecoderCell(s.channels, n_conditions, expand))
            if i + 1 < len(scales):
                self.dec_up.append(Up(s.channels, scales[i + 1].channels))
        # zero-initialised priors start as standard normals
        for m in self.prior:
            nn.init.zeros_(m[1].weight)
            nn.init.zeros_(m[1].bias)

    @property
    def group_shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of every latent group, in decoding order."""
        return [(self.latent_channels, s.resolution, s.resolution) for s in self.scales for _ in range(s.groups)]

    @property
    def group_areas(self) -> list[int]:
        return [h * w for _, h, w in self.group_shapes]

    @property
    def groups_per_scale(self) -> list[int]:
        """For each group, how many groups share its scale (KL balancing needs it)."""
        return [s.groups for s in self.scales for _ in range(s.groups)]

    def encode(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features for each group, in decoding order, from features `h` at the finest scale.

        The encoder runs finest scale first; the decoder coarsest first, and within a scale its
        first group meets the encoder's last cell there (NVAE's bidirectional pairing)."""
        per_scale: list[list[torch.Tensor]] = []  # finest scale first
        for i, cells in enumerate(self.enc_cells):
            feats = []
            for cell in cells:
                h = cell(h)
                feats.append(h)
            per_scale.append(feats[::-1])
            if i < len(self.enc_down):
                h = self.enc_down[i](h)
        return [f for feats in reversed(per_scale) for f in feats]

    def top_down(self, cond: torch.Tensor, enc: list[torch.Tensor] | None, noise: list[torch.Tensor] | None,
                 temperature: torch.Tensor | float = 1.0,
                 posterior_mean: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the decoder state at the finest scale, one tensor per group).

        With `enc` (training) each z is drawn from the residual posterior and the per-group
        tensors are the KL [N]; with `posterior_mean` too, z is the posterior's mean and the
        per-group tensors are the noise that gives that z from the prior at temperature 1 (what
        an encoder hands the sampler). Without `enc`, z comes from the prior with the explicit
        `noise` scaled by the temperature, and the list is empty."""
        n = cond.shape[0]
        h = self.h0.expand(n, -1, -1, -1) + self.h0_cond(cond)[:, :, None, None]
        kls: list[torch.Tensor] = []
        g = 0
        for i, s in enumerate(self.scales):
            for _ in range(s.groups):
                mu_p, log_sig_p = self.prior[g](h).chunk(2, dim=1)
                log_sig_p = soft_clamp(log_sig_p)
                if enc is not None:  # training: residual posterior around the prior (NVAE eq. 2)
                    d_mu, d_log_sig = self.posterior[g](torch.cat([h, enc[g]], dim=1)).chunk(2, dim=1)
                    d_log_sig = soft_clamp(d_log_sig)
                    if posterior_mean:
                        z = mu_p + d_mu
                        kls.append(d_mu * torch.exp(-log_sig_p))
                    else:
                        z = mu_p + d_mu + torch.exp(log_sig_p + d_log_sig) * torch.randn_like(mu_p)
                        # KL(q‖p) for the residual normal depends on Δμ, Δσ and σp only (NVAE eq. 2)
                        kl = 0.5 * (d_mu.pow(2) * torch.exp(-2 * log_sig_p) + torch.exp(2 * d_log_sig) - 1) - d_log_sig
                        kls.append(kl.flatten(1).sum(dim=1))
                else:  # sampling: explicit noise, scaled by the temperature
                    z = mu_p + temperature * torch.exp(log_sig_p) * noise[g]
                h = self.dec_cells[g](self.combine[g](torch.cat([h, z], dim=1)), cond)
                g += 1
            if i < len(self.dec_up):
                h = self.dec_up[i](h)
        return h, kls
