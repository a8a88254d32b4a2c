"""How far the projection retouch can move the benchmark at all: the shipped generator's benchmark
faces (T as shipped) judged as drawn, after the shipped retouch (gated by its critic), and after
the projection decode(encode(face)) applied everywhere, once and twice (no gate: the most a
projection retouch of that many passes can change). Each row beside the same run's references.

  PYTHONPATH=. python tests/perf/retouch_ceiling.py [--n 1000] [--refiner exports/refiner/1] \
      [--autoencoder training/checkpoints/generator_v2/decoder]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from services.shared.sampling import DEFAULT_TEMPERATURE
from training.generated import OnnxGenerator
from training.quality.benchmark import BenchmarkConfig, judges, sample_figures
from training.select import OnnxImageModel
from training.two_stage import load_autoencoder


def projector(autoencoder, passes: int):
    @torch.no_grad()
    def project(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), 250):
            y = torch.from_numpy(images[i : i + 250]).float()
            for _ in range(passes):
                y = (autoencoder.decode(autoencoder.encode(y)).permute(0, 2, 3, 1) + 1.0) * 127.5
            out.append(torch.round(y.clamp(0, 255)).to(torch.uint8).numpy())
        return np.concatenate(out)

    return project


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--generator", type=Path, default=Path("exports/generator/1"))
    ap.add_argument("--refiner", type=Path, default=Path("exports/refiner/1"))
    ap.add_argument("--autoencoder", type=Path, default=Path("training/checkpoints/generator_v2/decoder"),
                    help="the generator's autoencoder (the one inside the sampler and the refiner)")
    ap.add_argument("--data", type=Path, default=Path("data/bench"))
    ap.add_argument("--judge", type=Path, default=Path("exports/judge/1"))
    ap.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    args = ap.parse_args()
    cfg = BenchmarkConfig(n=args.n, temperatures=(args.temperature,))
    j = judges(args.data, args.judge, cfg)
    gen, ae = OnnxGenerator(args.generator), load_autoencoder(args.autoencoder)
    retouches = {"as drawn": lambda x: x, f"shipped retouch ({args.refiner})": OnnxImageModel(args.refiner),
                 "projection everywhere, once": projector(ae, 1), "projection everywhere, twice": projector(ae, 2)}
    refs = j.references
    print(f"references (same run, n = {args.n}): two real sets FD {refs['fd_real_real']:.1f}, "
          f"real vs blurred {refs['fd_real_blurred']:.1f}")
    print("| faces | FD (change) | precision / recall | Haar | judge max MAE | mean change /255 |")
    print("|---|---|---|---|---|---|")
    base, drawn = None, gen(j.a.conditions, args.temperature, np.arange(cfg.seed, cfg.seed + cfg.n))
    for name, fn in retouches.items():
        s = sample_figures(lambda c, t, seeds, fn=fn: fn(gen(c, t, seeds)), j, cfg, args.temperature)
        base = base or s["fd"]
        change = float(np.abs(fn(drawn).astype(float) - drawn).mean())
        print(f"| {name} | {s['fd']:.1f} ({100 * (s['fd'] / base - 1):+.0f} %) | {s['precision']:.3f} / {s['recall']:.3f} "
              f"| {s['haar']:.3f} | {s['judge_mae_max']:.3f} | {change:.2f} |", flush=True)


if __name__ == "__main__":
    main()
