"""The single-stage generator (the design of the first wave, kept for comparison): an NVAE-style
hierarchical VAE (Vahdat & Kautz 2020) over pixels, conditioned on the five attributes (a CVAE).
The shipped generator is two-stage (`autoencoder.py` + `latent_prior.py`).

- The hierarchy is data: `GeneratorConfig.scales` lists each latent scale (resolution, number of
  groups, feature channels), coarsest first; `nvae_hierarchy.Hierarchy` builds it.
- Bottom-up encoder with residual cells; top-down decoder that, group by group, predicts the prior
  p(z_l | z_<l, c) and (training) the residual posterior q = N(μp + Δμ, σp·Δσ) (NVAE eq. 2).
- The conditions c enter the first decoder state, modulate every decoder cell (conditional BN) and
  are concatenated to the encoder's input as constant maps.
- Output likelihood: a discretized mixture of logistics (PixelCNN++), so bits/dim is exact.

`forward(images, conditions)` (training) returns the output distribution's parameters and the KL
of each group; `sample(conditions, noise, temperature)` is what the ONNX sampler exports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from training.models.layers import ImageInput, as_faces
from training.models.nvae_cells import Down, Up
from training.models.nvae_hierarchy import Hierarchy, LatentScale

__all__ = ["GENERATOR_PRESETS", "AttributeGenerator", "GeneratorConfig", "LatentScale", "Sampler"]


@dataclass(frozen=True)
class GeneratorConfig:
    image_size: int = 64
    n_conditions: int = 5
    # coarsest first; resolutions double from one scale to the next
    scales: tuple[LatentScale, ...] = field(default_factory=lambda: (
        LatentScale(8, 4, 64), LatentScale(16, 2, 48), LatentScale(32, 1, 32)))
    latent_channels: int = 8  # channels of each group's z
    stem: int = 24  # channels at full resolution (pre/post-processing only: that is where it is costly)
    mixtures: int = 5  # logistic mixture components of the output likelihood
    expand: int = 3  # decoder cell expansion ratio


GENERATOR_PRESETS = {
    "tiny": GeneratorConfig(scales=(LatentScale(8, 2, 16), LatentScale(16, 1, 12)), latent_channels=4, stem=8,
                            mixtures=2, expand=2),
    "default": GeneratorConfig(),
    # NVAE's CelebA-64 shape (3 scales, 20/10/5 groups, 64 channels); for a GPU
    "celeba64": GeneratorConfig(scales=(LatentScale(8, 20, 64), LatentScale(16, 10, 64), LatentScale(32, 5, 64)),
                                latent_channels=20, stem=32, mixtures=10),
}


class AttributeGenerator(nn.Module):
    """The single-stage design: the hierarchy over pixels (full-resolution stem, downsampling to
    the finest latent scale, a discretized-logistic-mixture head)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        fine = cfg.scales[-1]
        self.input = ImageInput()
        self.enc_stem = nn.Conv2d(3 + cfg.n_conditions, cfg.stem, 3, padding=1)
        steps = (cfg.image_size // fine.resolution).bit_length() - 1  # halvings from the image to the finest scale
        if fine.resolution << steps != cfg.image_size or steps < 1:
            raise ValueError("the image size must be the finest latent resolution times a power of two (≥ 2)")
        widths = [cfg.stem] * steps + [fine.channels]
        self.enc_pre = nn.Sequential(*(Down(a, b) for a, b in zip(widths, widths[1:], strict=False)))
        self.hier = Hierarchy(cfg.scales, cfg.n_conditions, cfg.latent_channels, cfg.expand)
        self.post_up = nn.Sequential(*(Up(a, b) for a, b in zip(widths[::-1], widths[::-1][1:], strict=False)))
        self.head = nn.Conv2d(cfg.stem, 10 * cfg.mixtures, 1)  # per mixture: logit, 3 means, 3 log-scales, 3 coeffs

    # ------------------------------------------------------------------------------------------
    @property
    def group_shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of every latent group, in decoding order."""
        return self.hier.group_shapes

    @property
    def group_areas(self) -> list[int]:
        return self.hier.group_areas

    def encode(self, images: torch.Tensor, cond: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features for each group, in decoding order."""
        x = self.input(images)
        maps = cond[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.hier.encode(self.enc_pre(F.silu(self.enc_stem(torch.cat([x, maps], dim=1)))))

    def _top_down(self, cond: torch.Tensor, enc: list[torch.Tensor] | None, noise: list[torch.Tensor] | None,
                  temperature: torch.Tensor | float = 1.0):
        h, kls = self.hier.top_down(cond, enc, noise, temperature)
        return self.head(F.silu(self.post_up(h))), kls

    def forward(self, images: torch.Tensor, conditions: torch.Tensor, prior_conditions: torch.Tensor | None = None,
                prior_noise: list[torch.Tensor] | None = None, prior_temperature: float = 1.0):
        """Training pass: (output distribution parameters [N, 10·M, H, W], KL per group [N] each).

        With `prior_conditions`, also decodes prior samples for them (noise given) and returns
        their expected images in [-1, 1] as a third value: the condition-consistency loss needs
        them, and under DDP every loss must come out of forward."""
        params, kls = self._top_down(conditions, self.encode(images, conditions), None)
        if prior_conditions is None:
            return params, kls
        prior_params, _ = self._top_down(prior_conditions, None, prior_noise, prior_temperature)
        return params, kls, mixture_mean(prior_params, self.cfg.mixtures)

    def sample(self, conditions: torch.Tensor, noise: list[torch.Tensor], temperature: torch.Tensor | float = 1.0):
        """uint8 RGB NHWC images from the prior; all randomness comes in through `noise`."""
        params, _ = self._top_down(conditions, None, noise, temperature)
        return to_uint8(mixture_mean(params, self.cfg.mixtures))


def mixture_mean(params: torch.Tensor, mixtures: int) -> torch.Tensor:
    """The expected image of the logistic mixture (channels coupled as in PixelCNN++) in [-1, 1].

    A deterministic summary: sampling the mixture would add per-pixel noise that the sampler's
    explicit noise inputs do not cover."""
    n, _, h, w = params.shape
    logits = params[:, :mixtures]
    rest = params[:, mixtures:].reshape(n, 3, 3 * mixtures, h, w)
    means, coeffs = rest[:, :, :mixtures], torch.tanh(rest[:, :, 2 * mixtures :])
    r = means[:, 0]
    g = means[:, 1] + coeffs[:, 0] * r
    b = means[:, 2] + coeffs[:, 1] * r + coeffs[:, 2] * g
    weights = torch.softmax(logits, dim=1)
    rgb = torch.stack([(weights * c).sum(dim=1) for c in (r, g, b)], dim=1)
    return rgb.clamp(-1.0, 1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] NCHW → uint8 NHWC."""
    return as_faces(x).round().clamp(0, 255).to(torch.uint8)


class Sampler(nn.Module):
    """The exported graph: conditions [N, 5], temperature [], noise per group → uint8 images."""

    def __init__(self, model: AttributeGenerator) -> None:
        super().__init__()
        self.model = model

    def forward(self, conditions: torch.Tensor, temperature: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        return self.model.sample(conditions, list(noise), temperature)
