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

from services.shared.sampling import noise_for
from training.generated import OnnxGenerator
from training.quality.benchmark import BenchmarkConfig, judges, sample_figures

PROFILES = {  # temperature of the 4×4, 8×8 and 16×16 groups
    "flat 1.1 (shipped)": (1.1, 1.1, 1.1),
    "flat 1.0": (1.0, 1.0, 1.0),
    "coarse 0.9 / 1.1 / 1.2": (0.9, 1.1, 1.2),
    "coarse 1.0 / 1.1 / 1.1": (1.0, 1.1, 1.1),
    "fine 1.2 / 1.1 / 0.9": (1.2, 1.1, 0.9),
}


def drawn_with(gen: OnnxGenerator, profile: tuple[float, float, float], batch: int = 128):
    """`generate(conditions, t, seeds)` for sample_figures, each group's noise scaled by its scale's
    temperature (t is ignored: the profile is the temperature)."""
    scales = sorted({shape[1] for shape in gen.shapes})
    per_group = [profile[scales.index(shape[1])] for shape in gen.shapes]

    def generate(conditions: np.ndarray, t: float, seeds: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(conditions), batch):
            noise = [noise_for(int(s), gen.shapes) for s in seeds[i : i + batch]]
            feeds = {"conditions": conditions[i : i + batch].astype(np.float32), "temperature": np.array(1.0, np.float32)}
            for g, a in enumerate(per_group):
                feeds[f"noise_{g}"] = (a * np.stack([z[g] for z in noise])).astype(np.float32)
            out.append(gen.session.run(["images"], feeds)[0])
        return np.concatenate(out)

    return generate


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
    gen = OnnxGenerator(args.export)
    for name, profile in PROFILES.items():
        s = sample_figures(drawn_with(gen, profile), j, cfg, 1.0)
        print(f"{name:24s} FD {s['fd']:5.1f}  precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
              f"Haar {s['haar']:.3f}  diversity {s['diversity']:.3f}  skin {s['skin_std_over_real']:.2f}×  "
              f"worst judge MAE {s['judge_mae_max']:.3f}", flush=True)


if __name__ == "__main__":
    main()
