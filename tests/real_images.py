"""The real-photo smoke dataset: built at test time from photographs scikit-image ships.

Written in the seed's layout with varied sizes, formats and modes (JPEG, PNG, greyscale, RGBA),
so every loader and service is exercised on real photographs, not only on procedural faces.
Gender folders hold what is known: the astronaut (Eileen Collins) is female, the cameraman is
male; the LFW subset's faces carry no labels and go to unlabeled/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def build_real_smoke(root: Path) -> dict[str, list[str]]:
    from skimage import data

    root = Path(root)
    written: dict[str, list[str]] = {"Female": [], "Male": [], "unlabeled": []}

    def save(arr: np.ndarray, rel: str, mode: str | None = None, size: tuple[int, int] | None = None) -> None:
        im = Image.fromarray(arr)
        if size:
            im = im.resize(size, Image.Resampling.BICUBIC)
        if mode:
            im = im.convert(mode)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path)
        written[rel.split("/")[0]].append(rel)

    astro = data.astronaut()  # 512×512 RGB
    face = astro[20:240, 150:340]  # her face and hair
    save(astro, "Female/astronaut_full.jpg")
    save(face, "Female/astronaut_face.png")
    save(face, "Female/astronaut_face_grey.jpg", mode="L", size=(95, 110))
    save(face, "Female/astronaut_face_rgba.png", mode="RGBA", size=(64, 64))

    camera = data.camera()  # 512×512 grey; the cameraman's head is near the top
    save(camera[40:240, 170:330], "Male/cameraman_face.png")
    save(camera, "Male/cameraman_full.jpg", size=(300, 300))

    lfw = data.lfw_subset()[:100]  # the first 100 are faces (25×25 grey)
    for i, img in enumerate(lfw[:24]):
        arr = (img * 255).astype(np.uint8) if img.dtype != np.uint8 else img
        side = (25, 48, 64, 100)[i % 4]
        ext = ("png", "jpg")[i % 2]
        save(arr, f"unlabeled/lfw/{i // 8}/face_{i:03d}.{ext}", size=(side, side), mode="RGB" if i % 3 else None)
    return written
