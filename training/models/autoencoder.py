"""Stage 1 of the two-stage generator: an autoencoder between 64×64 RGB faces and a small latent
grid (16×16×4 by default), trained for sharp reconstructions (L1 + a patch-adversarial term, as
in VQGAN / latent diffusion, Esser et al. 2021 §3.2, Rombach et al. 2022 §3).

The conditional NVAE (`latent_prior.py`) then models the grid instead of 12,288 pixels: the
hierarchy spends its capacity on what a face is, and the decoder here, paid for once, draws the
pixels. `encode` returns the grid already normalised to unit scale (the prior's data);
`decode` maps such a grid back to images in [-1, 1].

Plain Conv/GroupNorm/F.silu only, so encoder and decoder export to ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.models.layers import ImageInput


@dataclass(frozen=True)
class AutoencoderConfig:
    image_size: int = 64
    latent_size: int = 16  # spatial size of the latent grid: image_size / 2**(len(widths) - 1)
    latent_channels: int = 4
    widths: tuple[int, ...] = (32, 64, 128)  # channels per resolution, full resolution first
    blocks: int = 1  # residual blocks per resolution (encoder); the decoder gets one more
    groups: int = 8  # GroupNorm groups


AUTOENCODER_PRESETS = {
    "tiny": AutoencoderConfig(widths=(8, 16, 16), groups=4),
    "default": AutoencoderConfig(),
}


def _norm(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, c), c)


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv3×3, twice, with a skip (a 1×1 projection when the width changes)."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.n1, self.c1 = _norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.n2, self.c2 = _norm(c_out, groups), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class Autoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, g = cfg.widths, cfg.groups
        if cfg.image_size >> (len(w) - 1) != cfg.latent_size:
            raise ValueError("latent_size must be image_size / 2**(len(widths) - 1)")
        self.input = ImageInput()
        enc: list[nn.Module] = [nn.Conv2d(3, w[0], 3, padding=1)]
        for i, c in enumerate(w):
            enc += [ResBlock(c if j else (w[i - 1] if i else w[0]), c, g) for j in range(cfg.blocks)]
            if i + 1 < len(w):
                enc.append(nn.Conv2d(c, c, 4, stride=2, padding=1))
        enc += [_norm(w[-1], g), nn.SiLU(), nn.Conv2d(w[-1], cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, w[-1], 3, padding=1)]
        rev = w[::-1]
        for i, c in enumerate(rev):
            dec += [ResBlock(c if j else (rev[i - 1] if i else rev[0]), c, g) for j in range(cfg.blocks + 1)]
            if i + 1 < len(rev):
                dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        dec += [_norm(w[0], g), nn.SiLU(), nn.Conv2d(w[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        # the latents' scale, measured once on the training set after training (set_scale):
        # the prior sees unit-scale data whatever the encoder's output range
        self.register_buffer("latent_shift", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_scale", torch.ones(cfg.latent_channels))

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight (VQGAN's adaptive adversarial weight is measured on it)."""
        return self.decoder[-1].weight

    def encode_raw(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in [0, 255]) NHWC → the unnormalised latent grid [N, C, S, S]."""
        return self.encoder(self.input(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The latent grid normalised to zero mean and unit scale per channel (the prior's data)."""
        return (self.encode_raw(images) - self.latent_shift[:, None, None]) / self.latent_scale[:, None, None]

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).clamp(-1.0, 1.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """A normalised latent grid → images NCHW in [-1, 1]."""
        return self.decode_raw(z * self.latent_scale[:, None, None] + self.latent_shift[:, None, None])

    @torch.no_grad()
    def set_scale(self, latents: torch.Tensor) -> None:
        """Fix the normalisation from unnormalised latents [N, C, S, S] of the training set."""
        self.latent_shift.copy_(latents.mean(dim=(0, 2, 3)))
        self.latent_scale.copy_(latents.std(dim=(0, 2, 3)).clamp(min=1e-4))

    def forward(self, images: torch.Tensor, latent_noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction NCHW in [-1, 1], unnormalised latents). Gaussian noise of
        `latent_noise` × the latents' batch std is added before decoding, so the decoder also draws
        sharp faces from latents a little off the encoder's (what a prior's samples are)."""
        z = self.encode_raw(images)
        zn = z
        if latent_noise > 0:
            zn = z + latent_noise * z.detach().std(dim=(0, 2, 3), keepdim=True) * torch.randn_like(z)
        return self.decode_raw(zn), z


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (Isola et al. 2017) used only while training the autoencoder: 64×64 →
    a grid of real/fake logits. Spectral normalisation keeps it smooth (Miyato et al. 2018)."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = []
        c_prev = 3
        for i, c in enumerate(widths):
            layers += [sn(nn.Conv2d(c_prev, c, 4, stride=2 if i < len(widths) - 1 else 1, padding=1)),
                       nn.LeakyReLU(0.2)]
            c_prev = c
        layers.append(sn(nn.Conv2d(c_prev, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: NCHW in [-1, 1] → patch logits [N, 1, h, w]."""
        return self.net(x)
