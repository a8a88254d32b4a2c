"""The critic: how real a face looks, per region and overall, in one forward pass.

A PatchGAN-style discriminator (Isola et al. 2017, §3.2.2): a few stride-2 convolutions map a
64×64 face to an 8×8 grid of logits, each judging the ~40-pixel patch it sees. The global score
is the sigmoid of the mean patch logit, so the map and the score never disagree about what the
critic thinks. Spectral normalisation (Miyato et al. 2018) keeps the critic smooth while the
refiner trains against it; it is folded into plain weights before export.

`forward` takes RGB NHWC images in [0, 255] (uint8 as exported, or float while training, so
gradients reach a refiner's output) and returns (realness [N], realness_map [N, R, R]), both
P(real) in [0, 1].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from training.models.layers import ImageInput


@dataclass(frozen=True)
class CriticConfig:
    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128)  # one stride-2 4×4 conv each: 64 → 8 with three
    head_width: int = 128  # the 3×3 conv before the 1×1 patch classifier
    spectral_norm: bool = True


CRITIC_PRESETS = {
    "tiny": CriticConfig(widths=(8, 16, 32), head_width=32),
    "default": CriticConfig(),
}


def _sn(conv: nn.Conv2d, on: bool) -> nn.Module:
    return parametrizations.spectral_norm(conv) if on else conv


class Critic(nn.Module):
    def __init__(self, cfg: CriticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input = ImageInput()
        layers: list[nn.Module] = []
        c = 3
        for w in cfg.widths:
            layers += [_sn(nn.Conv2d(c, w, 4, 2, 1), cfg.spectral_norm), nn.LeakyReLU(0.2)]
            c = w
        layers += [_sn(nn.Conv2d(c, cfg.head_width, 3, 1, 1), cfg.spectral_norm), nn.LeakyReLU(0.2),
                   _sn(nn.Conv2d(cfg.head_width, 1, 1), cfg.spectral_norm)]
        self.net = nn.Sequential(*layers)

    @property
    def map_size(self) -> int:
        return self.cfg.image_size // 2 ** len(self.cfg.widths)

    def patch_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logit of 'real' per region, [N, R, R]."""
        return self.net(self.input(images)).squeeze(1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.patch_logits(images)
        return torch.sigmoid(logits.mean(dim=(1, 2))), torch.sigmoid(logits)

    @torch.no_grad()
    def folded(self) -> Critic:
        """An eval-mode copy with spectral normalisation baked into plain weights (for export).

        Built fresh rather than by deep-copying and removing the parametrisations: the copies
        share torch's generated Parametrized* classes, and removing a parametrisation from one
        deletes the `weight` property of the other."""
        was_training = self.training
        self.eval()  # eval: σ from the stored power-iteration vectors, as the forward pass uses
        state = {f"{name}.{k}": getattr(m, k).detach().clone()
                 for name, m in self.named_modules() if isinstance(m, nn.Conv2d) for k in ("weight", "bias")}
        self.train(was_training)
        plain = Critic(dataclasses.replace(self.cfg, spectral_norm=False))
        plain.load_state_dict(state)
        return plain.eval()


def upsample_map(realness_map: torch.Tensor, size: int) -> torch.Tensor:
    """[N, R, R] → [N, 1, size, size], bilinear (smooth region borders)."""
    return F.interpolate(realness_map[:, None], size=(size, size), mode="bilinear", align_corners=False)
