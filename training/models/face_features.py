"""Features of the shipped filter network (a face CNN trained on this project's faces), read back
from its ONNX export, as a perceptual distance for the generator's autoencoder (LPIPS-style,
Zhang et al. 2018: unit-normalised channels, squared differences averaged per layer).

L1 alone let the autoencoder average uncertain detail into a blur; a distance in a face network's
features cares whether an eye or a lip edge is there, not only how far each pixel is. The filter
takes no part in judging the generator (the benchmark uses an ImageNet network, a face detector
and its own attribute judge). The export's BatchNorms are folded into its convolutions, so the
network is rebuilt here as conv (+bias) and SiLU with the export's own weights; it stays frozen.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class FilterFeatures(nn.Module):
    def __init__(self, weights: dict[str, torch.Tensor], stages: int = 3) -> None:
        super().__init__()
        self.stem = self._conv(weights, "features.0.0", stride=2)
        self.blocks = nn.ModuleList()
        for i in range(1, stages + 1):
            self.blocks.append(nn.ModuleDict({
                "a": self._conv(weights, f"features.{i}.body.0.0", stride=2),
                "b": self._conv(weights, f"features.{i}.body.1.0", stride=1),
                "skip": self._conv(weights, f"features.{i}.skip.1", stride=1),
            }))
        self.requires_grad_(False).eval()

    @staticmethod
    def _conv(weights: dict[str, torch.Tensor], name: str, stride: int) -> nn.Conv2d:
        w, b = weights[f"{name}.weight"], weights[f"{name}.weight_bias"]
        conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride, w.shape[2] // 2)
        conv.weight.data.copy_(w)
        conv.bias.data.copy_(b)
        return conv

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: NCHW in [-1, 1] (the graph's own input normalisation) → each stage's features."""
        h = F.silu(self.stem(x))
        feats = [h]
        for blk in self.blocks:
            body = F.silu(blk["b"](F.silu(blk["a"](h))))
            h = blk["skip"](F.avg_pool2d(h, 2)) + body
            feats.append(h)
        return feats

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mean over layers of the squared difference of channel-normalised features, per image [N]."""
        total = torch.zeros(a.shape[0], device=a.device)
        for fa, fb in zip(self(a), self(b), strict=True):
            na = fa / (fa.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-6)
            nb = fb / (fb.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-6)
            total = total + (na - nb).pow(2).sum(dim=1).mean(dim=(1, 2))
        return total


def load_filter_features(export_dir: Path | str, stages: int = 3) -> FilterFeatures:
    """The frozen feature network of an exported filter (its sha256 checked first)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from training.export import open_export

    open_export(export_dir)  # refuses a modified or half-copied model
    model = onnx.load(str(Path(export_dir) / "model.onnx"))
    weights = {i.name: torch.from_numpy(np.array(numpy_helper.to_array(i), dtype=np.float32))
               for i in model.graph.initializer}
    return FilterFeatures(weights, stages)
