"""What the sampler's refinement buys per pass: the benchmark's figures of a prior and decoder drawn
through `TwoStageSampler` with `Refinement(passes=p)` for each p asked (PyTorch, the exported graph's
networks; the same faces and seeds as the benchmark), beside the same run's references.

  PYTHONPATH=. python tests/perf/refinement_passes.py [--passes 0 1 2 4] [--no-round-trip] \
      [--prior training/checkpoints/generator_v2/prior_anchored] [--autoencoder training/checkpoints/generator_v2/decoder]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.shared.sampling import DEFAULT_TEMPERATURE
from training.generated import torch_draw
from training.models.latent_prior import Refinement, TwoStageSampler
from training.quality.benchmark import BenchmarkConfig, judges, sample_figures
from training.two_stage import load_autoencoder, load_prior


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, nargs="+", default=[0, 1, 2, 4])
    ap.add_argument("--no-round-trip", action="store_true", help="project the drawn grid without decoding it first")
    ap.add_argument("--prior", type=Path, default=Path("training/checkpoints/generator_v2/prior_anchored"))
    ap.add_argument("--autoencoder", type=Path, default=Path("training/checkpoints/generator_v2/decoder"))
    ap.add_argument("--data", type=Path, default=Path("data/bench"))
    ap.add_argument("--judge", type=Path, default=Path("exports/judge/1"))
    ap.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    cfg = BenchmarkConfig(n=args.n, temperatures=(args.temperature,))
    j = judges(args.data, args.judge, cfg)
    prior, ae = load_prior(args.prior), load_autoencoder(args.autoencoder)
    refs = j.references
    print(f"{args.prior} + {args.autoencoder}, T = {args.temperature}, n = {args.n}; references: two real sets "
          f"FD {refs['fd_real_real']:.1f}, real vs blurred {refs['fd_real_blurred']:.1f}")
    print("| passes | FD (× blurred) | precision / recall | Haar | diversity | skin × real | judge worst MAE |")
    print("|---|---|---|---|---|---|---|")
    for p in args.passes:
        sampler = TwoStageSampler(prior, ae, Refinement(passes=p, round_trip=not args.no_round_trip)).eval()
        s = sample_figures(torch_draw(sampler), j, cfg, args.temperature)
        print(f"| {p} | {s['fd']:.1f} ({s['fd_over_blurred']:.3f}) | {s['precision']:.3f} / {s['recall']:.3f} "
              f"| {s['haar']:.3f} | {s['diversity']:.3f} | {s['skin_std_over_real']:.2f} | {s['judge_mae_max']:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
