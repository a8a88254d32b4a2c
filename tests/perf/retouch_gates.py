"""The gate frontier of a trained retouch (a `facegen-train critic` run folder with its latent
denoiser): the benchmark's 1000 faces at the sampler's default temperature, one projection each,
blended in through each (flag_below, ramp); per gate the FD change, the share of the change inside
the regions critic A flags, on how many faces the independent critic B's realness rose, and the
mean change on generated and on real faces (real set B). The issue's goals: FD −20 %, share ≥ 70 %,
B's realness up on ≥ 80 %, real faces ≤ 1/255.

  PYTHONPATH=. python tests/perf/retouch_gates.py [--run runs/critic] [--n 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from retouch_ceiling import gate_frontier, load_critic  # tests/perf/retouch_ceiling.py (the script's folder is on sys.path)

from services.shared.sampling import DEFAULT_TEMPERATURE
from training import config as config_io
from training.generated import OnnxGenerator
from training.models.latent_denoiser import LatentDenoiser
from training.models.refiner import ProjectionConfig, ProjectionRetouch
from training.quality.benchmark import BenchmarkConfig, judges
from training.train_attributes import load_trained
from training.train_latent_denoiser import DenoiserTrainConfig
from training.two_stage import load_autoencoder

GATES = ((0.9, 0.4), (0.8, 0.3), (0.8, 0.2), (0.775, 0.3), (0.775, 0.25), (0.75, 0.3), (0.75, 0.2), (0.7, 0.3))


def load_denoiser(folder: Path) -> LatentDenoiser:
    model = LatentDenoiser(config_io.load(DenoiserTrainConfig, folder / "config.json").model)
    model.load_state_dict(torch.load(folder / "state.pt", map_location="cpu", weights_only=False)["model"])
    return model.eval().requires_grad_(False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("runs/critic"), help="a `facegen-train critic` run folder")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--generator", type=Path, default=Path("exports/generator/1"))
    ap.add_argument("--autoencoder", type=Path, default=Path("training/checkpoints/generator_v2/decoder"))
    ap.add_argument("--attributes-run", type=Path, default=Path("runs/attributes"))
    ap.add_argument("--data", type=Path, default=Path("data/bench"))
    ap.add_argument("--judge", type=Path, default=Path("exports/judge/1"))
    args = ap.parse_args()
    a, b = load_critic(args.run / "critic_a"), load_critic(args.run / "critic_b")
    attributes, _ = load_trained(args.attributes_run)
    retoucher = ProjectionRetouch(a, load_autoencoder(args.autoencoder), ProjectionConfig(),
                                  load_denoiser(args.run / "denoiser"), attributes.eval()).eval()
    cfg = BenchmarkConfig(n=args.n, temperatures=(DEFAULT_TEMPERATURE,))
    j = judges(args.data, args.judge, cfg, log=lambda *_: None)
    drawn = OnnxGenerator(args.generator)(j.a.conditions, DEFAULT_TEMPERATURE, np.arange(cfg.seed, cfg.seed + cfg.n))
    refs = j.references
    print(f"{args.n} faces at T = {DEFAULT_TEMPERATURE} (references: two real sets {refs['fd_real_real']:.1f}, "
          f"real vs blurred {refs['fd_real_blurred']:.1f})")
    gate_frontier(retoucher, j, drawn, j.b.images[: args.n // 2], GATES, judge=b)

if __name__ == "__main__":
    main()
