"""Where the PNG bytes of a procedural face go, and what a smaller file would cost.

    python tests/perf/png_budget.py --n 300 [--haar]

The Foundation issue asks for 10,000 faces in "a few MB" of PNG (≈ 300–500 B per 64×64 face);
as shipped they take ≈ 4.3 KB. This prints bytes per face (Pillow, optimize=True):
1. cumulatively, after each drawing stage of `render`;
2. with parts of the shading switched off — hair streaks, multiplicative shade (ambient occlusion,
   eye sockets, nostrils) and additive highlights, which the Haar rates depend on
   (shared/notes/procedural-faces.md);
3. stored as `facegen-train synth --colours K` writes them (full colour, or a per-face palette:
   training/data/palette.py) and, for comparison, with Pillow's plain RGB median cut; with --haar
   also the Haar rates of the stored faces (near-frontal, exactly one box; overall and per
   skin-tone third).
The ablations patch the renderer in this process only; nothing here changes the shipped faces.
"""

from __future__ import annotations

import argparse
import io
from unittest import mock

import numpy as np
from PIL import Image

from training.data import synthetic as S
from training.data.canvas import Canvas
from training.data.synth_dataset import save_png


def png_bytes(img: Image.Image) -> int:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.tell()


def mean_bytes(images: list[Image.Image | np.ndarray]) -> float:
    return float(np.mean([png_bytes(im if isinstance(im, Image.Image) else Image.fromarray(im)) for im in images]))


def stored(images: list[np.ndarray], colours: int) -> tuple[float, list[Image.Image]]:
    """Mean PNG bytes as the dataset writer stores the faces, and the faces read back from them."""
    sizes, back = [], []
    for a in images:
        buf = io.BytesIO()
        save_png(a, colours, buf)
        sizes.append(buf.tell())
        back.append(Image.open(buf))
    return float(np.mean(sizes)), back


def haar_rates(images: list[Image.Image], faces: list[S.Face]) -> str:
    from training.data.haar import HaarProbe

    probe = HaarProbe()
    near = [i for i, f in enumerate(faces) if abs(f.head - 0.5) < 0.2]
    ok = np.array([probe.exactly_one(np.asarray(images[i].convert("RGB"))) for i in near])
    tone = np.array([faces[i].skin_tone for i in near])
    thirds = [ok[(tone >= lo) & (tone < hi)].mean() for lo, hi in ((0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.01))]
    return f"Haar {ok.mean():.3f} (light {thirds[0]:.3f}, mid {thirds[1]:.3f}, dark {thirds[2]:.3f}; n={len(ok)})"


def by_stage(faces: list[S.Face], cfg: S.SynthConfig) -> list[tuple[str, float]]:
    """render()'s stages drawn one after another, the PNG size after each."""
    side = cfg.size * cfg.supersample
    stages = ["background", "body", "face", "eyes", "nose_and_mouth", "fringe"]
    sizes = np.zeros(len(stages))
    for f in faces:
        cv, g = Canvas(side, side), S._Geometry(f)
        skin, hair = S._palette(S.SKIN, f.skin_tone), S._palette(S.HAIR, f.hair_color)
        args = {"background": (cv, f), "body": (cv, f, g, skin, hair), "face": (cv, f, g, skin, hair),
                "eyes": (cv, f, g, skin, hair), "nose_and_mouth": (cv, f, g, skin), "fringe": (cv, f, g, hair)}
        for i, stage in enumerate(stages):
            getattr(S, f"_{stage}")(*args[stage])
            sizes[i] += png_bytes(Image.fromarray(cv.to_uint8(cfg.supersample)))
    return list(zip(stages, sizes / len(faces), strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--haar", action="store_true", help="also the Haar detection rates of the stored faces")
    args = ap.parse_args()
    cfg = S.SynthConfig()
    rng = np.random.default_rng(args.seed)
    faces = [S.sample_face(rng, cfg) for _ in range(args.n)]

    def row(label: str, b: float, extra: str = "") -> None:
        print(f"  {label:<44} {b:6.0f} B/face → {b * 10_000 / 2**20:5.1f} MiB per 10,000  {extra}")

    print(f"{args.n} faces at {cfg.size}×{cfg.size}, PNG optimize=True")
    print("after each drawing stage:")
    for stage, b in by_stage(faces, cfg):
        row(stage, b)

    def shipped() -> list[np.ndarray]:
        return [S.render(f, cfg) for f in faces]

    images = shipped()
    print("ablations (each adds to the one above):")
    row("as shipped", mean_bytes(images))
    with mock.patch.object(S, "_hair_texture", lambda cv, win, face, hair: hair * 0.92):
        row("flat hair (no streaks)", mean_bytes(shipped()))
        with mock.patch.object(Canvas, "scale", lambda *a: None):
            row("+ no multiplicative shade (AO, sockets)", mean_bytes(shipped()))
            with mock.patch.object(Canvas, "add", lambda *a: None):
                row("+ no additive highlights", mean_bytes(shipped()))
    print("stored as `facegen-train synth --colours K` stores them (K = 0: full colour), and with Pillow's "
          "plain RGB median cut instead:")
    for colours in (0, 64, 16, 12, 8):
        size, ims = stored(images, colours)
        row(f"{colours} colours (--colours)" if colours else "full colour", size,
            haar_rates(ims, faces) if args.haar else "")
        if colours:
            ims = [Image.fromarray(a).quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
                   for a in images]
            row(f"{colours} colours, RGB median cut", mean_bytes(ims), haar_rates(ims, faces) if args.haar else "")


if __name__ == "__main__":
    main()
