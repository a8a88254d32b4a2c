"""Rendering speed of the procedural face set on one core, and PNG size.

    python tests/perf/bench_synth.py --n 2000

Prints images/s for rendering alone and for rendering + PNG encoding (one process, one thread),
and the PNG bytes per image, extrapolated to 10,000 images: full colour, and with the per-image
palette of `facegen-train synth --colours K` (K from --colours, default 16).
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np

from training.data.synth_dataset import save_png
from training.data.synthetic import SynthConfig, render, sample_face


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--colours", type=int, default=16)
    args = ap.parse_args()
    cfg = SynthConfig(size=args.size)
    rng = np.random.default_rng(0)
    faces = [sample_face(rng, cfg) for _ in range(args.n)]
    render(faces[0], cfg)  # warm caches

    t0 = time.perf_counter()
    images = [render(f, cfg) for f in faces]
    t_render = time.perf_counter() - t0

    def store(colours: int) -> tuple[float, int]:
        """Seconds and bytes to store every face as `facegen-train synth --colours` does."""
        t0 = time.perf_counter()
        total = 0
        for img in images:
            buf = io.BytesIO()
            save_png(img, colours, buf)
            total += buf.tell()
        return time.perf_counter() - t0, total

    print(f"{args.n} faces at {args.size}×{args.size}, one core")
    print(f"render:        {args.n / t_render:7.0f} img/s")
    for label, (t_png, total) in (
        ("full colour", store(0)),
        (f"{args.colours} colours", store(args.colours)),
    ):
        print(f"render + PNG, {label}: {args.n / (t_render + t_png):7.0f} img/s, {total / args.n:5.0f} B/img → "
              f"{total / args.n * 10_000 / 2**20:.1f} MiB per 10,000 images")


if __name__ == "__main__":
    main()
