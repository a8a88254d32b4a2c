"""How well critic exports tell the shipped sampler's faces from real faces none of them saw: the
AUC of each one's realness, the benchmark's unseen real faces against the sampler's faces at
T = 1.1 for the same faces' conditions. What each critic's choice does to the served faces is the
benchmark's served column (`facegen-train evaluate-generator ... --oversample 4 --critic DIR`).

  PYTHONPATH=. python tests/perf/critic_judges.py --critic exports/critic/1 --critic DIR [--n 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from training.eval_critic import auc
from training.generated import OnnxGenerator
from training.quality.benchmark import load_real
from training.select import OnnxImageModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--critic", type=Path, action="append", required=True)
    ap.add_argument("--generator", type=Path, default=Path("exports/generator/1"))
    ap.add_argument("--data", type=Path, default=Path("data/bench"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--temperature", type=float, default=1.1)
    args = ap.parse_args()

    real, _ = load_real(args.data, args.n, seed=0)
    fake = OnnxGenerator(args.generator)(real.conditions, args.temperature, np.arange(args.n))
    print(f"{args.n} unseen real faces vs {args.n} of {args.generator} at T = {args.temperature}")
    for path in args.critic:
        critic = OnnxImageModel(path)
        r, f = critic(real.images), critic(fake)
        print(f"{path}: AUC {auc(r, f):.3f} (mean realness real {r.mean():.3f}, generated {f.mean():.3f})")


if __name__ == "__main__":
    main()
