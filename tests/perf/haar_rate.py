"""How often OpenCV's Haar frontal-face cascade finds exactly one face in procedural faces.

    python tests/perf/haar_rate.py --n 2000 --seed 0

Protocol (fixed by the Foundation issue): 64 → 128 px bicubic, grey,
detectMultiScale(1.1, 4, minSize=(24, 24)); success = exactly one box. Reported for
near-frontal faces (|head − 0.5| < 0.2) overall, per skin-tone third and per eye openness.
"""

from __future__ import annotations

import argparse

import numpy as np

from training.data.haar import HaarProbe
from training.data.synthetic import SynthConfig, render, sample_face


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="faces to draw (all yaws)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = SynthConfig()
    rng = np.random.default_rng(args.seed)
    probe = HaarProbe()
    rows = []
    for _ in range(args.n):
        face = sample_face(rng, cfg)
        rows.append((face.head, face.skin_tone, face.eyes, face.female, probe.exactly_one(render(face, cfg))))
    head, tone, eyes, female, ok = (np.array(c) for c in zip(*rows, strict=True))
    frontal = np.abs(head - 0.5) < 0.2

    def rate(mask: np.ndarray) -> str:
        return f"{ok[mask].mean():.3f} (n={int(mask.sum())})" if mask.any() else "n/a"

    print(f"near-frontal exactly-one rate: {rate(frontal)}")
    for name, lo, hi in (("light", 0, 1 / 3), ("mid", 1 / 3, 2 / 3), ("dark", 2 / 3, 1.01)):
        print(f"  skin {name:5s}: {rate(frontal & (tone >= lo) & (tone < hi))}")
    for name, lo, hi in (("closed", 0, 0.2), ("half", 0.2, 0.7), ("open", 0.7, 1.01)):
        print(f"  eyes {name:6s}: {rate(frontal & (eyes >= lo) & (eyes < hi))}")
    print(f"  female: {rate(frontal & female)}  male: {rate(frontal & ~female)}")
    off = np.abs(head - 0.5)
    for lo in (0.2, 0.25, 0.3, 0.4):
        print(f"|head-0.5| in [{lo:.2f}, {lo + 0.05:.2f}): {rate((off >= lo) & (off < lo + 0.05))}")


if __name__ == "__main__":
    main()
