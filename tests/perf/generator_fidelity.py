"""Condition fidelity of an exported generator, judged by one or more exported attribute models.

    PYTHONPATH=. python tests/perf/generator_fidelity.py [--generator exports/generator/1]
        [--attributes exports/attributes/1 /tmp/att_noregion/1] [--n 256] [--temperature 0.8]

Draws n uniform random condition vectors, samples one face each (seeds 7…), and prints the MAE
between requested and measured conditions per judge. A judge that never took part in training
(e.g. the no-region-crops ablation: `facegen-train attributes --data data/synth10k
--set model.region_features=false --out runs/attributes_noregion --export /tmp/att_noregion/1`)
shows whether a gain is real or the generator learned to please the model in its loss.
"""

from __future__ import annotations

import argparse

import numpy as np

from services.shared.conditions import CONDITIONS
from training.generated import OnnxGenerator
from training.select import OnnxImageModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", default="exports/generator/1")
    ap.add_argument("--attributes", nargs="+", default=["exports/attributes/1"])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.8)
    args = ap.parse_args()
    cond = np.random.default_rng(0).random((args.n, len(CONDITIONS)), dtype=np.float32)
    faces = OnnxGenerator(args.generator)(cond, args.temperature, np.arange(args.n) + 7)
    for judge in args.attributes:
        err = np.abs(OnnxImageModel(judge)(faces) - cond).mean(axis=0)
        per = ", ".join(f"{c} {e:.3f}" for c, e in zip(CONDITIONS, err, strict=True))
        print(f"{judge}: mean {err.mean():.3f} ({per})")


if __name__ == "__main__":
    main()
