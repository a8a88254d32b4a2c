"""Finding image files and reading them safely.

A dataset of thousands of photos always holds a few bad files. They are reported by path with a
reason and skipped; they never stop a run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# What Pillow reads and photo datasets actually contain.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

# Refuse absurd dimensions before decoding (a 64×64 model never needs a 100-megapixel image).
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class UnreadableImage(ValueError):
    """The file is not an image Pillow can decode (or is too large to be one we want)."""


def find_images(folder: Path, recursive: bool = True) -> tuple[list[Path], list[Problem]]:
    """Image files under `folder` sorted by path, plus non-image files as problems."""
    found: list[Path] = []
    problems: list[Problem] = []
    walker = folder.rglob("*") if recursive else folder.glob("*")
    for p in sorted(walker):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            found.append(p)
        else:
            problems.append(Problem(str(p), f"not an image file (suffix {p.suffix or 'none'!r})"))
    return found, problems


def load_rgb(path: Path | str) -> np.ndarray:
    """Decode any Pillow-readable image to uint8 RGB (H, W, 3); UnreadableImage otherwise."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise UnreadableImage(f"{im.width}×{im.height} exceeds {MAX_PIXELS} pixels")
                im.load()
                return to_rgb(im)
    except UnreadableImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(f"cannot decode image: {exc}") from exc


def to_rgb(im: Image.Image) -> np.ndarray:
    """Greyscale, palette, 16-bit and RGBA images become 8-bit RGB (alpha composited on black)."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(arr / max(arr.max(), 1.0) * 255.0, 0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)
