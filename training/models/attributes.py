"""The attribute model: the five CVAE conditions in [0, 1] from a face image.

One shared trunk reads the whole face (hair colour, background brightness and head yaw are
global properties). Eye and mouth openness are small details — a few pixels at 64×64 — that the
trunk's pooled 4×4 features blur away, so (as the seed author found) those two outputs also get
features from full-resolution crops of where the eyes and the mouth sit on an aligned face.
The crop boxes are wide horizontally because yaw slides the features sideways.

`forward` takes uint8 RGB NHWC images and returns conditions [N, 5] in CONDITIONS order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from services.shared.conditions import CONDITIONS
from training.models.layers import ConvBNAct, ImageInput, ResidualBlock

EYES, MOUTH = CONDITIONS.index("eyes"), CONDITIONS.index("mouth")
GLOBAL = [i for i, c in enumerate(CONDITIONS) if c not in ("eyes", "mouth")]


@dataclass(frozen=True)
class AttributeConfig:
    image_size: int = 64
    stem: int = 24  # channels of the stride-2 first conv
    widths: tuple[int, ...] = (48, 96, 160)  # trunk stages, stride 2 each
    region_features: bool = True  # eyes/mouth also see full-resolution crops (the ablation turns it off)
    region_width: int = 32  # channels of each region branch
    # (top, bottom, left, right) as fractions of the aligned face image
    eye_box: tuple[float, float, float, float] = (0.36, 0.64, 0.04, 0.96)
    mouth_box: tuple[float, float, float, float] = (0.58, 0.88, 0.10, 0.90)
    hidden: int = 96
    dropout: float = 0.1


ATTRIBUTE_PRESETS = {
    "tiny": AttributeConfig(stem=8, widths=(8, 16, 24), region_width=8, hidden=16, dropout=0.0),
    "default": AttributeConfig(),
}


def _box(box: tuple[float, float, float, float], size: int) -> tuple[int, int, int, int]:
    top, bottom, left, right = (round(v * size) for v in box)
    return top, bottom, left, right


class RegionBranch(nn.Module):
    """A small CNN over one fixed crop of the full-resolution image → a feature vector."""

    def __init__(self, box: tuple[int, int, int, int], width: int) -> None:
        super().__init__()
        self.box = box  # plain ints: become constant Slice bounds in the ONNX graph
        self.net = nn.Sequential(
            ConvBNAct(3, width // 2, 3),
            ResidualBlock(width // 2, width, stride=2),
            ResidualBlock(width, width, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.box
        return self.net(x[:, :, top:bottom, left:right]).mean(dim=(2, 3))


class AttributeNet(nn.Module):
    def __init__(self, cfg: AttributeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input = ImageInput()
        layers: list[nn.Module] = [ConvBNAct(3, cfg.stem, 3, stride=2)]
        c = cfg.stem
        for w in cfg.widths:
            layers.append(ResidualBlock(c, w, stride=2))
            c = w
        self.trunk = nn.Sequential(*layers)
        self.shared = nn.Sequential(nn.Linear(c, cfg.hidden), nn.SiLU(), nn.Dropout(cfg.dropout))
        self.global_out = nn.Linear(cfg.hidden, len(GLOBAL))
        extra = cfg.region_width if cfg.region_features else 0
        if cfg.region_features:
            self.eye_branch = RegionBranch(_box(cfg.eye_box, cfg.image_size), cfg.region_width)
            self.mouth_branch = RegionBranch(_box(cfg.mouth_box, cfg.image_size), cfg.region_width)
        self.eye_out = nn.Sequential(nn.Linear(cfg.hidden + extra, cfg.hidden // 2), nn.SiLU(), nn.Linear(cfg.hidden // 2, 1))
        self.mouth_out = nn.Sequential(nn.Linear(cfg.hidden + extra, cfg.hidden // 2), nn.SiLU(), nn.Linear(cfg.hidden // 2, 1))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid conditions [N, 5] in CONDITIONS order."""
        x = self.input(images)
        g = self.shared(self.trunk(x).mean(dim=(2, 3)))
        if self.cfg.region_features:
            eye_in = torch.cat([g, self.eye_branch(x)], dim=1)
            mouth_in = torch.cat([g, self.mouth_branch(x)], dim=1)
        else:
            eye_in = mouth_in = g
        parts = {EYES: self.eye_out(eye_in), MOUTH: self.mouth_out(mouth_in)}
        glob = self.global_out(g)
        for k, i in enumerate(GLOBAL):
            parts[i] = glob[:, k : k + 1]
        return torch.cat([parts[i] for i in range(len(CONDITIONS))], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Conditions in [0, 1], shape [N, 5] (CONDITIONS order)."""
        return torch.sigmoid(self.logits(images))
