"""Per-scale temperatures for the shipped sampler: does cooling the coarse latent groups and
warming the fine ones (or the reverse) beat one temperature for all?

    PYTHONPATH=. python tests/perf/group_temperatures.py [--n 1000]

The graph draws each group as mu + T·sigma·noise, so scaling a group's noise by a_g at T = 1 draws
it at temperature a_g with no change to the export. Each profile (4×4, 8×8, 16×16 groups) is judged
by the sample-quality benchmark's figures (training/quality/benchmark.py) against the same real
sets, in the same run, beside the flat temperatures it is meant to beat.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from training.generated import OnnxGenerator
from training.quality.benchmark import BenchmarkConfig, judges, sample_figures

PROFILES = {  # temperature of the 4×4, 8×8 and 16×16 groups
    "flat 1.1 (shipped)": (1.1, 1.1, 1.1),
    "flat 1.0": (1.0, 1.0, 1.0),
    "coarse 0.9 / 1.1 / 1.2": (0.9, 1.1, 1.2),
    "coarse 1.0 / 1.1 / 1.1": (1.0, 1.1, 1.1),
    "fine 1.2 / 1.1 / 0.9": (1.2, 1.1, 0.9),
}


class _ScaledNoise:
    """A generator session whose noise inputs are scaled group by group on the way in."""

    def __init__(self, session, per_group: list[float]) -> None:
        self.session, self.per_group = session, per_group

    def run(self, names, feeds):
        scaled = {k: (self.per_group[int(k.removeprefix("noise_"))] * v).astype(np.float32) if k.startswith("noise_")
                  else v for k, v in feeds.items()}
        return self.session.run(names, scaled)


def drawn_with(export: Path, profile: tuple[float, float, float]):
    """`generate(conditions, t, seeds)` for sample_figures: the sampler's draw (OnnxGenerator) with each
    group's noise scaled by its scale's temperature, at T = 1 (t is ignored: the profile is the temperature)."""
    gen = OnnxGenerator(export)
    scales = sorted({shape[1] for shape in gen.shapes})
    gen.session = _ScaledNoise(gen.session, [profile[scales.index(shape[1])] for shape in gen.shapes])
    return lambda conditions, t, seeds: gen(conditions, 1.0, seeds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--export", type=Path, default=Path("exports/generator/1"))
    args = ap.parse_args()
    cfg = BenchmarkConfig(n=args.n)
    j = judges(Path("data/bench"), Path("exports/judge/1"), cfg, log=lambda m: None)
    refs = j.references
    print(f"references (n = {args.n}): two real sets FD {refs['fd_real_real']:.1f}, "
          f"real vs blurred {refs['fd_real_blurred']:.1f}")
    for name, profile in PROFILES.items():
        s = sample_figures(drawn_with(args.export, profile), j, cfg, 1.0)
        print(f"{name:24s} FD {s['fd']:5.1f}  precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
              f"Haar {s['haar']:.3f}  diversity {s['diversity']:.3f}  skin {s['skin_std_over_real']:.2f}×  "
              f"worst judge MAE {s['judge_mae_max']:.3f}", flush=True)


if __name__ == "__main__":
    main()
