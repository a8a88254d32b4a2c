"""NVAE's residual cells (Vahdat & Kautz 2020, §3.1 and Fig. 3), with conditional BatchNorm
for the CVAE. Plain Conv/BatchNorm/F.silu only, so the decoder exports to ONNX."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.models.layers import SqueezeExcite

RES_SCALE = 0.1  # residual branches are scaled down (NVAE's cells start near identity)


def soft_clamp(x: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    """Smoothly bound log-scales to (−bound, bound) (NVAE's soft_clamp5): keeps KL finite early on."""
    return bound * torch.tanh(x / bound)


class CondBatchNorm(nn.Module):
    """BatchNorm whose scale and shift come from the conditions (conditional BN, FiLM-style)."""

    def __init__(self, channels: int, n_cond: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.film = nn.Linear(n_cond, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(cond).chunk(2, dim=1)
        return self.bn(x) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class EncoderCell(nn.Module):
    """BN–Swish–conv3×3, twice, then squeeze-and-excitation (NVAE Fig. 3b)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2, self.conv2 = nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.se = SqueezeExcite(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.bn1(x)))
        h = self.conv2(F.silu(self.bn2(h)))
        return x + RES_SCALE * self.se(h)


class DecoderCell(nn.Module):
    """BN → 1×1 expand → BN–Swish → depthwise 5×5 → BN–Swish → 1×1 → BN → SE (NVAE Fig. 3a);
    the first BN is conditional on the five conditions."""

    def __init__(self, channels: int, n_cond: int, expand: int = 3) -> None:
        super().__init__()
        wide = channels * expand
        self.bn0 = CondBatchNorm(channels, n_cond)
        self.expand = nn.Conv2d(channels, wide, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(wide)
        self.dw = nn.Conv2d(wide, wide, 5, padding=2, groups=wide, bias=False)
        self.bn2 = nn.BatchNorm2d(wide)
        self.project = nn.Conv2d(wide, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.se = SqueezeExcite(channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.expand(self.bn0(x, cond))
        h = self.dw(F.silu(self.bn1(h)))
        h = self.project(F.silu(self.bn2(h)))
        return x + RES_SCALE * self.se(self.bn3(h))


class Down(nn.Module):
    """Halve the resolution and change the width (BN–Swish–strided conv)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.silu(self.bn(x)))


class Up(nn.Module):
    """Double the resolution and change the width (nearest upsampling, BN–Swish–conv)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.silu(self.bn(F.interpolate(x, scale_factor=2.0, mode="nearest"))))
