"""The refiner: retouches a generated face where a critic flags it (SimGAN, Shrivastava et al.
2017, §2: a fully convolutional ResNet at full resolution that outputs a refined image).

It predicts a bounded per-pixel change (tanh · max_change, in 0..255 units) and applies it
through the critic's realness map: regions the critic scores at or above `flag_below` stay
untouched, lower ones are retouched in proportion to how fake they look. The last conv starts at
zero, so an untrained refiner is the identity.

`Retouch` is what gets exported: uint8 NHWC images → retouched uint8 images, with the critic
that flags the regions inside the graph (pure feed-forward; nothing is optimised at serving time).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.models.critic import Critic, upsample_map
from training.models.layers import PreActBlock, as_faces


@dataclass(frozen=True)
class RefinerConfig:
    image_size: int = 64
    # full resolution is what the serving cost scales with: 48 channels × 4 blocks retouched at
    # 133 img/s under ONNX Runtime here, 32 × 3 at ~2.5× that, with the same held-out figures
    width: int = 32  # channels of every full-resolution block
    blocks: int = 3  # residual blocks
    max_change: float = 16.0  # bound of the per-pixel change, in 0..255 units
    flag_below: float = 0.5  # realness at or above this leaves a region untouched


REFINER_PRESETS = {
    "tiny": RefinerConfig(width=8, blocks=1),
    "default": RefinerConfig(),
}


class Refiner(nn.Module):
    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Conv2d(3, cfg.width, 3, 1, 1)
        self.blocks = nn.Sequential(*[PreActBlock(cfg.width) for _ in range(cfg.blocks)])
        self.out = nn.Conv2d(cfg.width, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def change(self, images: torch.Tensor) -> torch.Tensor:
        """Proposed change, NHWC in [-max_change, max_change], for NHWC images in [0, 255]."""
        x = images.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
        d = self.out(F.silu(self.blocks(self.stem(x))))
        return (torch.tanh(d) * self.cfg.max_change).permute(0, 2, 3, 1)

    def flag_weights(self, realness_map: torch.Tensor) -> torch.Tensor:
        """How much of the change each pixel takes, NHWC [N, H, W, 1]: 0 where realness ≥ flag_below,
        rising linearly to 1 at realness 0."""
        r = upsample_map(realness_map, self.cfg.image_size).permute(0, 2, 3, 1)
        return torch.clamp((self.cfg.flag_below - r) / self.cfg.flag_below, 0.0, 1.0)

    def forward(self, images: torch.Tensor, realness_map: torch.Tensor) -> torch.Tensor:
        """Retouched float images in [0, 255] (differentiable; no rounding)."""
        x = images.float()
        return torch.clamp(x + self.flag_weights(realness_map) * self.change(x), 0.0, 255.0)


class Retouch(nn.Module):
    """The exported refiner: the flagging critic and the refiner in one graph."""

    def __init__(self, refiner: Refiner, critic: Critic) -> None:
        super().__init__()
        self.refiner, self.critic = refiner, critic

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, realness_map = self.critic(images)
        return torch.round(self.refiner(images, realness_map)).to(torch.uint8)


@dataclass(frozen=True)
class ProjectionConfig:
    # regions the flagging critic scores at or above flag_below stay untouched; at flag_below − ramp
    # and below they take the whole projection, linearly in between. flag_below is calibrated per
    # critic (train_critic.calibrate_projection); a narrower ramp keeps more of the change where the
    # map flags at the same FD gain (the frontier is in tests/perf/RESULTS.md)
    flag_below: float = 0.6
    ramp: float = 0.3
    iterations: int = 1  # projections in a row (each costs one encoder and one decoder pass)


class ProjectionRetouch(nn.Module):
    """Retouch by projection: where the flagging critic's map says fake, the face is replaced by
    its projection onto the generator's own models, in proportion to how fake the region looks.
    The projection encodes the face with the autoencoder, moves its latent grid with the latent
    denoiser when there is one (a learned stand-in for several of the NVAE prior's posterior-mean
    projections, fed the face's conditions as the attribute model reads them: models/
    latent_denoiser.py) and decodes it. A sample of the prior decodes latents the encoder would not
    have made; encoding it again lands on latents of the kind the decoder was trained on, and the
    prior's projection moves them towards what it models; their decoding is closer to real faces
    (tests/perf/RESULTS.md has the measurements), while the face, its conditions and the regions
    the critic accepts are kept. Pure feed-forward: critic, attribute model, encoder, denoiser and
    decoder in one graph, uint8 NHWC in and out."""

    def __init__(self, critic: Critic, autoencoder: nn.Module, cfg: ProjectionConfig,
                 denoiser: nn.Module | None = None, attributes: nn.Module | None = None) -> None:
        super().__init__()
        if (denoiser is None) != (attributes is None):
            raise ValueError("the latent denoiser reads the face's conditions: give both or neither")
        self.critic, self.autoencoder, self.cfg = critic, autoencoder, cfg
        self.denoiser, self.attributes = denoiser, attributes

    def with_config(self, cfg: ProjectionConfig) -> ProjectionRetouch:
        """The same models under another gate."""
        return ProjectionRetouch(self.critic, self.autoencoder, cfg, self.denoiser, self.attributes).eval()

    def gate(self, realness_map: torch.Tensor, size: int) -> torch.Tensor:
        """How much of the projection each pixel takes, NHWC [N, H, W, 1]."""
        r = upsample_map(realness_map, size).permute(0, 2, 3, 1)
        return torch.clamp((self.cfg.flag_below - r) / self.cfg.ramp, 0.0, 1.0)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """decode(denoise(encode(x))), iterated; float NHWC in [0, 255]."""
        y = images.float()
        for _ in range(self.cfg.iterations):
            grid = self.autoencoder.encode(y)
            if self.denoiser is not None:
                grid = self.denoiser(grid, self.attributes(y))
            y = as_faces(self.autoencoder.decode(grid))
        return y

    def blend(self, x: torch.Tensor, realness_map: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        """Float NHWC faces `x` with their projection blended in through the gate of their map."""
        return torch.clamp(x + self.gate(realness_map, x.shape[1]) * (projected - x), 0.0, 255.0)

    def refine(self, images: torch.Tensor) -> torch.Tensor:
        """Retouched float images in [0, 255]."""
        x = images.float()
        _, realness_map = self.critic(x)
        return self.blend(x, realness_map, self.project(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.round(self.refine(images)).to(torch.uint8)
