"""The filter: P(female) from a face image, calibrated by temperature scaling.

`forward` takes uint8 RGB NHWC images and returns the calibrated probability — exactly what is
exported. Training uses `logits` (uncalibrated); calibration then sets the `temperature` buffer,
so the exported graph carries it and P(female) ≥ 0.9 means what it says.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.models.layers import ConvBNAct, ImageInput, ResidualBlock


@dataclass(frozen=True)
class FilterConfig:
    image_size: int = 64  # square input side
    stem: int = 24  # channels of the first conv
    # stride of the first conv: 2 works at 32×32 from the start, ~3× cheaper than 1 (at 1 the
    # full-resolution stem capped ONNX Runtime at ~1400 img/s on 2 cores, and with it serving)
    stem_stride: int = 2
    widths: tuple[int, ...] = (32, 64, 128, 192)  # one stride-2 residual stage each (~0.8 M parameters)
    dropout: float = 0.1  # before the final linear layer


FILTER_PRESETS = {
    "tiny": FilterConfig(stem=8, widths=(8, 16, 32), dropout=0.0),
    "default": FilterConfig(),
}


class FilterNet(nn.Module):
    def __init__(self, cfg: FilterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input = ImageInput()
        layers: list[nn.Module] = [ConvBNAct(3, cfg.stem, 3, stride=cfg.stem_stride)]
        c = cfg.stem
        for w in cfg.widths:
            layers.append(ResidualBlock(c, w, stride=2))
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(c, 1))
        # temperature scaling (Guo et al. 2017): p = σ(logit / T); fitted after training
        self.register_buffer("temperature", torch.ones(()))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logit of 'female' for uint8 NHWC images: shape (N,)."""
        x = self.features(self.input(images))
        return self.head(x.mean(dim=(2, 3))).squeeze(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Calibrated P(female), shape (N,)."""
        return torch.sigmoid(self.logits(images) / self.temperature)
