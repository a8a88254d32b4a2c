"""The preprocessing config (size, crop) and the augmentations (horizontal flip, brightness).

Augmentations that change what a condition measures also change its label: a mirrored face is
turned the other way (head → 1 − head) and a brightened image has a brighter background.
Every random choice comes from the numpy Generator passed in, so a seed fixes the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from services.shared.conditions import mirror_head
from services.shared.images import fit

# CelebA's aligned 178×218 images: the usual 148×148 face box (NVAE's and most GANs' celeba64).
CELEBA_CROP = (15 / 178, 40 / 218, 163 / 178, 188 / 218)


@dataclass(frozen=True)
class Preprocess:
    height: int = 64  # model input height (the seed author also used 128×104: height=128, width=104)
    width: int = 64
    # (left, top, right, bottom) as fractions of the source image; None = the largest centred
    # box with the target aspect ratio
    crop: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"image size {self.height}×{self.width} is too small")
        if self.crop is not None:
            left, top, right, bottom = self.crop
            if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
                raise ValueError(f"crop {self.crop} must satisfy 0 ≤ left < right ≤ 1, 0 ≤ top < bottom ≤ 1")


def crop_and_resize(img: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 RGB (H, W, 3) → uint8 RGB (pre.height, pre.width, 3), by the rule serving shares."""
    return fit(img, pre.height, pre.width, pre.crop)


@dataclass(frozen=True)
class Augment:
    flip: bool = True  # mirror half of the images; head → 1 − head
    brightness: float = 0.15  # multiply pixel values by U(1 − b, 1 + b); 0 disables


def hflip(img: np.ndarray, conditions: Mapping[str, float] | None = None):
    """Mirror an image left-right; its `head` label turns the other way."""
    flipped = np.ascontiguousarray(img[:, ::-1])
    if conditions is None:
        return flipped, None
    out = dict(conditions)
    if "head" in out:
        out["head"] = mirror_head(out["head"])
    return flipped, out


def adjust_brightness(img: np.ndarray, factor: float, conditions: Mapping[str, float] | None = None):
    """Scale pixel values; `background` (a brightness) scales with them, clipped to [0, 1]."""
    out_img = np.clip(img.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8)
    if conditions is None:
        return out_img, None
    out = dict(conditions)
    if "background" in out:
        out["background"] = float(np.clip(out["background"] * factor, 0.0, 1.0))
    return out_img, out


def augment(img: np.ndarray, conditions: Mapping[str, float] | None, rng: np.random.Generator, cfg: Augment):
    """Random flip and brightness, labels kept consistent. Deterministic given `rng`'s state."""
    # draw both numbers every time so one setting does not shift the other's random stream
    do_flip = rng.random() < 0.5
    factor = 1.0 + rng.uniform(-cfg.brightness, cfg.brightness)
    if cfg.flip and do_flip:
        img, conditions = hflip(img, conditions)
    if cfg.brightness > 0:
        img, conditions = adjust_brightness(img, factor, conditions)
    return img, conditions
