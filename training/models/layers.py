"""Layers shared by the facegen models. Plain Conv/BatchNorm/F.silu only, so ONNX export works."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ImageInput(nn.Module):
    """uint8 RGB NHWC in [0, 255] → float NCHW in [-1, 1], inside the graph.

    Baking this into every exported model means every caller (services, tests, other models)
    feeds the same raw uint8 images and no client can normalise differently.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0


def as_faces(images: torch.Tensor) -> torch.Tensor:
    """ImageInput's inverse for decoded images: float NCHW in [-1, 1] → float NHWC in [0, 255],
    as the attribute model and the critic read faces (gradients flow through)."""
    return (images.float().permute(0, 2, 3, 1) + 1.0) * 127.5


class ConvBNAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.SiLU(),
        )


class SqueezeExcite(nn.Module):
    """Channel gating (Hu et al. 2018), as used in NVAE's residual cells."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(F.silu(self.fc1(s))))
        return x * s[:, :, None, None]


class ResidualBlock(nn.Module):
    """Two 3×3 ConvBNAct with a skip; stride 2 halves the resolution (1×1 projection on the skip)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(c_in, c_out, 3, stride), ConvBNAct(c_out, c_out, 3))
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            # ResNet-D shortcut (He et al. 2019, "Bag of Tricks"): average-pool, then a 1×1 conv.
            # It also avoids a strided 1×1 conv, whose CPU backward on channels-last activations
            # corrupts the heap in torch 2.13 (reproduced here; tests/test_filter.py covers it).
            else nn.Sequential(
                # ceil_mode: odd sizes round up, as the strided 3×3 conv of the body does
                nn.AvgPool2d(stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity(),
                nn.Conv2d(c_in, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class PreActBlock(nn.Module):
    """x + conv(silu(conv(silu(x)))): a residual block without normalisation, for the small
    fully convolutional refiners whose output starts at the identity."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))
