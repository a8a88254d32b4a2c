"""The ceiling any prior over the autoencoder's grid can reach: the benchmark's Fréchet distance and
precision / recall of the autoencoder's own reconstructions of unseen real faces (real set B,
encoded and decoded) against real set A, beside the references of the same run.

  PYTHONPATH=. python tests/perf/autoencoder_ceiling.py [--autoencoder training/checkpoints/generator_v2/decoder]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from training.quality import metrics
from training.quality.benchmark import BenchmarkConfig, judges
from training.quality.feature_net import features
from training.two_stage import load_autoencoder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--autoencoder", type=Path, action="append",
                    help="autoencoder folders (model.pt + config.json); repeat to compare")
    ap.add_argument("--data", type=Path, default=Path("data/bench"))
    ap.add_argument("--judge", type=Path, default=Path("exports/judge/1"))
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    j = judges(args.data, args.judge, BenchmarkConfig(n=args.n))
    refs = j.references
    print(f"references: two real sets FD {refs['fd_real_real']:.1f}, real vs blurred {refs['fd_real_blurred']:.1f}")
    for folder in args.autoencoder or [Path("training/checkpoints/generator_v2/autoencoder")]:
        ae = load_autoencoder(folder)
        with torch.no_grad():
            rec = np.concatenate([((ae.decode(ae.encode(torch.from_numpy(j.b.images[i : i + 200]))).permute(0, 2, 3, 1)
                                    + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
                                  for i in range(0, len(j.b.images), 200)])
        f = features(j.net, rec)
        p, r = metrics.precision_recall(j.f_a, f, 3)
        print(f"{folder}: reconstructions FD {metrics.frechet_distance(j.f_a, f):.1f}, precision / recall {p:.3f} / {r:.3f}, "
              f"L1 {np.abs(rec.astype(float) - j.b.images).mean():.2f}/255")


if __name__ == "__main__":
    main()
