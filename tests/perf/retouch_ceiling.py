"""How far the projection retouch can move the benchmark at all: the shipped generator's benchmark
faces (T as shipped) judged as drawn, after the shipped retouch (gated by its critic), and after
the projection decode(encode(face)) applied everywhere, once and twice (no gate: the most a
projection retouch of that many passes can change). Each row beside the same run's references.
With --critic-run (a `facegen-train critic` run folder), the gate's frontier as well: for each
(flag_below, ramp), the FD change, the share of the change inside the regions critic A flags, and
the mean change on generated and on real faces (real set B).

  PYTHONPATH=. python tests/perf/retouch_ceiling.py [--n 1000] [--refiner exports/refiner/1] \
      [--autoencoder training/checkpoints/generator_v2/decoder] [--critic-run runs/critic]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from services.shared.sampling import DEFAULT_TEMPERATURE
from training import config as config_io
from training.eval_critic import share_inside_flagged
from training.generated import OnnxGenerator
from training.models.critic import Critic, upsample_map
from training.quality import metrics
from training.quality.benchmark import BenchmarkConfig, judges, sample_figures
from training.quality.feature_net import features
from training.select import OnnxImageModel
from training.train_critic import CriticTrainConfig
from training.two_stage import load_autoencoder

GATES = ((10.0, 1e-4), (1.2, 0.7), (1.0, 0.45), (0.8, 0.3), (0.7, 0.2), (0.6, 0.1), (0.5, 1e-4))


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


def load_critic_a(run: Path) -> Critic:
    cfg = config_io.load(CriticTrainConfig, run / "critic_a" / "config.json")
    critic = Critic(cfg.critic)
    critic.load_state_dict(torch.load(run / "critic_a" / "state.pt", map_location="cpu", weights_only=False)["model"])
    return critic.folded().eval()


def gate_frontier(critic: Critic, project, j, drawn: np.ndarray, real: np.ndarray) -> None:
    @torch.no_grad()
    def realness(images: np.ndarray) -> torch.Tensor:
        return torch.cat([critic(torch.from_numpy(images[i : i + 250]))[1] for i in range(0, len(images), 250)])

    maps = {"generated": realness(drawn), "real": realness(real)}
    images = {"generated": drawn.astype(np.float32), "real": real.astype(np.float32)}
    projected = {k: project(v).astype(np.float32) for k, v in (("generated", drawn), ("real", real))}
    fd0 = metrics.frechet_distance(j.f_a, features(j.net, drawn))
    flagged = float((maps["generated"] < 0.5).float().mean())
    print(f"\ncritic A realness: generated {float(maps['generated'].mean()):.2f}, real {float(maps['real'].mean()):.2f}; "
          f"{flagged:.0%} of generated regions under 0.5")
    print("| gate (flag_below, ramp) | FD change | share of the change where A flags | mean change, generated / real (/255) |")
    print("|---|---|---|---|")
    for flag, ramp in GATES:
        out, change = {}, {}
        for k in ("generated", "real"):
            w = upsample_map(maps[k], drawn.shape[1]).permute(0, 2, 3, 1).numpy()
            w = np.clip((flag - w) / ramp, 0.0, 1.0)
            out[k] = np.round(np.clip(images[k] + w * (projected[k] - images[k]), 0, 255))
            change[k] = out[k] - images[k]
        fd = metrics.frechet_distance(j.f_a, features(j.net, out["generated"].astype(np.uint8)))
        share = share_inside_flagged(maps["generated"], torch.from_numpy(change["generated"]))
        print(f"| {flag:g}, {ramp:g} | {100 * (fd / fd0 - 1):+.1f} % | {share:.0%} | "
              f"{np.abs(change['generated']).mean():.2f} / {np.abs(change['real']).mean():.2f} |", flush=True)


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
    ap.add_argument("--critic-run", type=Path, default=None, help="also print the gate frontier of this run's critic A")
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
    if args.critic_run is not None:
        gate_frontier(load_critic_a(args.critic_run), projector(ae, 1), j, drawn, j.b.images[:500])


if __name__ == "__main__":
    main()
