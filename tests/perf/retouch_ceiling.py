"""How far the projection retouch can move the benchmark at all: the shipped generator's benchmark
faces (T as shipped) judged as drawn, after the shipped retouch (gated by its critic), and after
the projection decode(encode(face)) applied everywhere, once and twice (no gate: the most a
projection retouch of that many passes can change), and with --prior the prior's posterior-mean
projection of the latent grid k times (--passes) between encoder and decoder, everywhere and
through the shipped gate (what the retouch's latent denoiser is distilled from: its ceiling).
Each row beside the same run's references.
With --critic-run (a `facegen-train critic` run folder), the gate's frontier as well: for each
(flag_below, ramp), the FD change, the share of the change inside the regions critic A flags, and
the mean change on generated and on real faces (real set B).

  PYTHONPATH=. python tests/perf/retouch_ceiling.py [--n 1000] [--refiner exports/refiner/1] \
      [--autoencoder training/checkpoints/generator_v2/decoder] [--critic-run runs/critic] \
      [--prior training/checkpoints/generator_v2/prior_anchored --passes 1 2 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from services.shared.exports import read_export
from services.shared.sampling import DEFAULT_TEMPERATURE
from training.eval_critic import share_inside_flagged
from training.generated import OnnxGenerator
from training.models.critic import Critic
from training.models.refiner import ProjectionConfig, ProjectionRetouch
from training.quality import metrics
from training.quality.benchmark import BenchmarkConfig, judges, sample_figures
from training.quality.feature_net import features
from training.select import OnnxImageModel
from training.train_critic import load_critic
from training.two_stage import load_autoencoder

GATES = ((10.0, 1e-4), (1.2, 0.7), (1.0, 0.45), (0.8, 0.3), (0.7, 0.2), (0.6, 0.1), (0.5, 1e-4))


def projector(retoucher: ProjectionRetouch):
    """uint8 faces → their projection (the retoucher's, as many passes as its config), uint8."""
    @torch.no_grad()
    def project(images: np.ndarray) -> np.ndarray:
        out = [retoucher.project(torch.from_numpy(images[i : i + 250])) for i in range(0, len(images), 250)]
        return torch.round(torch.cat(out).clamp(0, 255)).to(torch.uint8).numpy()

    return project


def prior_projector(prior, ae, passes: int, gate: ProjectionRetouch | None = None):
    """(uint8 faces, their conditions) → decode(project^passes(encode(face))), uint8; through the
    gate's critic map when `gate` is given (its config), else everywhere."""
    @torch.no_grad()
    def project(images: np.ndarray, conditions: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), 250):
            x, c = torch.from_numpy(images[i : i + 250]).float(), torch.from_numpy(conditions[i : i + 250]).float()
            g = prior.project(ae.encode(x), c, passes)
            y = (ae.decode(g).permute(0, 2, 3, 1) + 1.0) * 127.5
            out.append(y if gate is None else gate.blend(x, gate.critic(x)[1], y))
        return torch.round(torch.cat(out).clamp(0, 255)).to(torch.uint8).numpy()

    return project


def load_critic_a(run: Path) -> Critic:
    return load_critic(run / "critic_a")


def gate_frontier(retoucher: ProjectionRetouch, j, drawn: np.ndarray, real: np.ndarray,
                  gates=GATES, judge: Critic | None = None) -> None:
    """For each (flag_below, ramp): the retoucher's projection blended in through that gate of its
    critic's map (as the exported graph blends it), printed as FD (change), the share of the change
    where the critic flags, with `judge` (an independent critic) on how many faces its realness
    rose, and the mean change on generated and on real faces."""
    def per_batch(fn, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(x[i : i + 250]) for i in range(0, len(x), 250)])

    @torch.no_grad()
    def prepared(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(images).float()
        return x, per_batch(lambda v: retoucher.critic(v)[1], x), per_batch(retoucher.project, x)

    generated, real_set = prepared(drawn), prepared(real)
    maps = generated[1]
    fd0 = metrics.frechet_distance(j.f_a, features(j.net, drawn))
    print(f"\n{len(drawn)} faces, FD as drawn {fd0:.1f}; critic A realness: generated {float(maps.mean()):.2f}, "
          f"real {float(real_set[1].mean()):.2f}; {float((maps < 0.5).float().mean()):.0%} of generated regions under 0.5")
    with torch.no_grad():
        before = None if judge is None else per_batch(lambda v: judge(v)[0], generated[0])
    if before is not None:
        print(f"the independent critic's realness as drawn {float(before.mean()):.3f}")
    print("| gate (flag_below, ramp) | FD (change) | change where A flags | "
          + ("" if judge is None else "B's realness rose (mean after) | ") + "mean change, generated / real (/255) |")
    print("|---|---|---|" + ("" if judge is None else "---|") + "---|")
    for flag, ramp in gates:
        gated = retoucher.with_config(ProjectionConfig(flag_below=flag, ramp=ramp, iterations=retoucher.cfg.iterations))
        with torch.no_grad():
            out, out_real = torch.round(gated.blend(*generated)), torch.round(gated.blend(*real_set))
            after = None if judge is None else per_batch(lambda v: judge(v)[0], out)
        fd = metrics.frechet_distance(j.f_a, features(j.net, out.to(torch.uint8).numpy()))
        share = share_inside_flagged(maps, out - generated[0])
        rose = "" if after is None else f"{float((after > before).float().mean()):.1%} ({float(after.mean()):.3f}) | "
        print(f"| {flag:g}, {ramp:g} | {fd:.1f} ({100 * (fd / fd0 - 1):+.1f} %) | {share:.1%} | {rose}"
              f"{float((out - generated[0]).abs().mean()):.2f} / {float((out_real - real_set[0]).abs().mean()):.2f} |",
              flush=True)


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
    ap.add_argument("--prior", type=Path, default=None, help="also the prior's projection (a stage-2 run or checkpoint)")
    ap.add_argument("--passes", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    cfg = BenchmarkConfig(n=args.n, temperatures=(args.temperature,))
    j = judges(args.data, args.judge, cfg)
    gen, ae = OnnxGenerator(args.generator), load_autoencoder(args.autoencoder)
    refiner = OnnxImageModel(args.refiner)
    retouches = {"as drawn": lambda x, c: x, f"shipped retouch ({args.refiner})": lambda x, c: refiner(x),
                 **{f"projection everywhere, {name}": lambda x, c, k=k: projector(
                     ProjectionRetouch(None, ae, ProjectionConfig(iterations=k)))(x)
                    for name, k in (("once", 1), ("twice", 2))}}
    if args.prior is not None:
        from training.two_stage import load_prior

        prior = load_prior(args.prior)
        cal = read_export(args.refiner).signature["retouch"]
        gate = ProjectionRetouch(load_critic_a(args.critic_run), ae, ProjectionConfig(cal["flag_below"], cal["ramp"])) \
            if args.critic_run is not None else None
        for k in args.passes:
            retouches[f"prior projection × {k}, everywhere"] = prior_projector(prior, ae, k)
            if gate is not None:
                retouches[f"prior projection × {k}, shipped gate ({cal['flag_below']:g} / {cal['ramp']:g})"] = \
                    prior_projector(prior, ae, k, gate)
    refs = j.references
    print(f"references (same run, n = {args.n}): two real sets FD {refs['fd_real_real']:.1f}, "
          f"real vs blurred {refs['fd_real_blurred']:.1f}")
    print("| faces | FD (change) | precision / recall | Haar | judge max MAE | mean change /255 |")
    print("|---|---|---|---|---|---|")
    base = drawn = None
    for name, fn in retouches.items():
        first: list[tuple[np.ndarray, np.ndarray]] = []  # the benchmark's faces (its first call), before / after

        def generate(c, t, seeds, fn=fn, first=first):
            before = gen(c, t, seeds)
            after = fn(before, c)
            if not first:
                first.append((before, after))
            return after

        s = sample_figures(generate, j, cfg, args.temperature)
        base = base or s["fd"]
        drawn, after = first[0]
        change = float(np.abs(after.astype(float) - drawn).mean())
        print(f"| {name} | {s['fd']:.1f} ({100 * (s['fd'] / base - 1):+.0f} %) | {s['precision']:.3f} / {s['recall']:.3f} "
              f"| {s['haar']:.3f} | {s['judge_mae_max']:.3f} | {change:.2f} |", flush=True)
    if args.critic_run is not None:
        gate_frontier(ProjectionRetouch(load_critic_a(args.critic_run), ae, ProjectionConfig()).eval(), j, drawn,
                      j.b.images[:500])


if __name__ == "__main__":
    main()
