"""Sample quality against training time for a two-stage generator run: every snapshot of the
prior's EMA weights (runs/generator/snapshots/, one per `snapshot_every` steps, through each
fine-tune) with the stage-1 autoencoder, then every snapshot of the adapted decoder (stage 3) with
the last prior, judged by the benchmark (same real sets, judge and references for every point).
The x axis is wall time since stage 1 started (stage 1's time, then each later run's up to the snapshot).

  PYTHONPATH=. python tests/perf/quality_curve.py --run runs/generator [--run runs/prior_anchor ...] \
      [--decoder runs/decoder ...] --autoencoder runs/autoencoder --n 500 [--reuse OLD.json] \
      --out training/assets/generator_quality_curve.png

A run trained on after its folder is gone (a compact checkpoint, exported) extends an earlier
curve by one point, the export's, drawn as the sampler service draws it:

  PYTHONPATH=. python tests/perf/quality_curve.py --extend OLD.json --export exports/generator/1 \
      --label NAME --minutes-after M [--stage1-minutes S] --n 300 --out training/assets/generator_quality_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from services.shared.sampling import DEFAULT_TEMPERATURE
from training import config as config_io
from training.generated import torch_draw
from training.models.latent_prior import LatentPrior, TwoStageSampler
from training.quality.benchmark import BenchmarkConfig, judges, sample_figures
from training.train_generator import readjust_bn
from training.train_latent_prior import LatentPriorTrainConfig
from training.two_stage import load_autoencoder


def _elapsed(log: Path) -> dict[int, float]:
    """step + 1 → seconds since the run's first step (resumed runs: gaps between sessions left out)."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    out, total, last = {}, 0.0, None
    for r in rows:
        if last is not None:
            total += min(max(r["time"] - last, 0.0), 60.0)  # a pause (a resume) counts as one step
        last = r["time"]
        out[r["step"] + 1] = total
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, action="append",
                    help="stage 2's run folder; repeat, in order, for fine-tunes that started from the previous one")
    ap.add_argument("--decoder", type=Path, action="append", default=[],
                    help="stage 3's run folder (decoder adaptation): its snapshots, with the last --run's prior; "
                         "repeat, in order, for runs that started from the previous one's decoder")
    ap.add_argument("--autoencoder", type=Path, default=Path("runs/autoencoder"))
    ap.add_argument("--data", type=Path, default=Path("data/bench"))
    ap.add_argument("--judge", type=Path, default=Path("exports/judge/1"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    ap.add_argument("--reuse", type=Path, default=None,
                    help="an earlier curve's JSON (same n, data, judge): its points of these runs are kept, not redrawn")
    ap.add_argument("--out", type=Path, default=Path("training/assets/generator_quality_curve.png"))
    ap.add_argument("--extend", type=Path, default=None,
                    help="an earlier curve's JSON: keep its points and add --export's after them")
    ap.add_argument("--export", type=Path, default=None, help="with --extend: the sampler export of the new point")
    ap.add_argument("--label", default=None, help="with --extend: the new point's run name")
    ap.add_argument("--minutes-after", type=float, default=None,
                    help="with --extend: training minutes from the last point to the new one")
    ap.add_argument("--stage1-minutes", type=float, default=None,
                    help="with --extend: where stage 1 ends, if the earlier JSON does not say")
    args = ap.parse_args()
    if args.extend is not None:
        _extend(args, ap)
        return
    reused = {}
    if args.reuse is not None:
        old = json.loads(args.reuse.read_text())
        drawn = {k: old.get(k, v) for k, v in (("temperature", args.temperature), ("n", args.n))}
        if drawn != {"temperature": args.temperature, "n": args.n}:
            ap.error(f"--reuse {args.reuse} was drawn at {drawn}, not temperature {args.temperature}, n {args.n}")
        reused = {(p["run"], p["step"]): p for p in old["points"]}
    cfg = BenchmarkConfig(n=args.n, temperatures=(args.temperature,))
    j = judges(args.data, args.judge, cfg)
    ae = load_autoencoder(args.autoencoder)
    ae_seconds = max(_elapsed(args.autoencoder / "log.jsonl").values())
    runs = args.run or [Path("runs/generator")]
    snaps, offset = [], ae_seconds
    for run in runs:
        elapsed = _elapsed(run / "log.jsonl")
        snaps += [(run, s, offset + elapsed.get(int(s.stem[4:]), 0.0)) for s in sorted((run / "snapshots").glob("step*.pt"))]
        offset += max(elapsed.values())
    for decoder in args.decoder:  # resumed runs start their log where they left off: its snapshots after the resume
        elapsed = _elapsed(decoder / "log.jsonl")
        snaps += [(decoder, s, offset + elapsed.get(int(s.stem[4:]), 0.0))
                  for s in sorted((decoder / "snapshots").glob("step*.pt"))]
        offset += max(elapsed.values())
    run_cfg = config_io.load(LatentPriorTrainConfig, runs[0] / "config.json")
    last_prior = None
    points = []
    for run, snap, seconds in snaps:
        step = int(snap.stem[4:])
        if (str(run), step) in reused:
            points.append({**reused[(str(run), step)], "minutes": seconds / 60})
            continue
        if run in args.decoder:
            if last_prior is None:
                last_prior = _prior(run_cfg, sorted((runs[-1] / "snapshots").glob("step*.pt"))[-1])
            decoder = load_autoencoder(args.autoencoder)
            decoder.load_state_dict(torch.load(snap, map_location="cpu"))
            sampler = TwoStageSampler(last_prior, decoder, run_cfg.refine).eval()
        else:
            sampler = TwoStageSampler(_prior(run_cfg, snap), ae, run_cfg.refine).eval()

        fig = sample_figures(torch_draw(sampler), j, cfg, args.temperature)
        minutes = seconds / 60
        points.append({"run": str(run), "step": step, "minutes": minutes, **fig})
        _say(f"{run} step {step}", minutes, fig)
    _write(args.out, args.temperature, args.n, j.references, points, ae_seconds / 60)


def _say(label: str, minutes: float, fig: dict) -> None:
    print(f"{label}: {minutes:.0f} min, FD {fig['fd']:.1f} ({fig['fd_over_blurred']:.2f} × blurred), "
          f"P/R {fig['precision']:.2f}/{fig['recall']:.2f}, Haar {fig['haar']:.2f}, diversity {fig['diversity']:.3f}, "
          f"judge max MAE {fig['judge_mae_max']:.3f}", flush=True)


def _write(out: Path, temperature: float, n: int, refs: dict, points: list[dict], stage1_minutes: float) -> None:
    out.with_suffix(".json").write_text(json.dumps(
        {"temperature": temperature, "n": n, "stage1_minutes": stage1_minutes, "references": refs, "points": points},
        indent=2) + "\n")
    _plot(points, refs, out, stage1_minutes)


def _extend(args, ap) -> None:
    """The earlier curve's points as they were, then one point for the export, judged by the same
    benchmark (its references redrawn from the same data and n must match the earlier ones)."""
    from training.generated import OnnxGenerator

    old = json.loads(args.extend.read_text())
    if args.export is None or args.label is None or args.minutes_after is None:
        ap.error("--extend needs --export, --label and --minutes-after")
    if (old["temperature"], old["n"]) != (args.temperature, args.n):
        ap.error(f"--extend {args.extend} was drawn at temperature {old['temperature']}, n {old['n']}")
    stage1 = args.stage1_minutes if args.stage1_minutes is not None else old.get("stage1_minutes")
    if stage1 is None:
        ap.error(f"{args.extend} does not say where stage 1 ends: give --stage1-minutes")
    cfg = BenchmarkConfig(n=args.n, temperatures=(args.temperature,))
    j = judges(args.data, args.judge, cfg)
    drift = {k: (old["references"][k], v) for k, v in j.references.items()
             if isinstance(v, float) and not np.isclose(old["references"].get(k, np.nan), v, rtol=1e-4)}
    if drift:
        ap.error(f"the references differ from {args.extend}'s (other data or judge?): {drift}")
    fig = sample_figures(OnnxGenerator(args.export), j, cfg, args.temperature)
    minutes = old["points"][-1]["minutes"] + args.minutes_after
    steps = json.loads((args.export / "card.json").read_text()).get("decoder_config", {}).get("steps")
    point = {"run": args.label, "step": steps, "minutes": minutes, **fig}
    _say(args.label, minutes, fig)
    _write(args.out, args.temperature, args.n, old["references"], [*old["points"], point], stage1)


def _prior(run_cfg: LatentPriorTrainConfig, snap: Path) -> LatentPrior:
    prior = LatentPrior(run_cfg.model)
    prior.load_state_dict({k: v.float() for k, v in torch.load(snap, map_location="cpu").items()})
    readjust_bn(prior, run_cfg.readjust_temperature, 20)  # as the export does, on fewer batches
    return prior.eval()


def _plot(points: list[dict], refs: dict, out: Path, stage1_minutes: float) -> None:
    from training.plots import line_panels

    out.parent.mkdir(parents=True, exist_ok=True)
    line_panels(out, [p["minutes"] for p in points], [
        {"title": "Frechet distance (MobileNetV2)", "lines": {"samples": [p["fd"] for p in points]},
         "refs": {"real vs blurred real": refs["fd_real_blurred"], "goal 0.15 x blurred": 0.15 * refs["fd_real_blurred"],
                  "two real sets": refs["fd_real_real"]}},
        {"title": "precision / recall / Haar one face", "ylim": (0.0, 1.0),
         "lines": {k: [p[k] for p in points] for k in ("precision", "recall", "haar")}},
        {"title": "diversity / skin spread / worst judge MAE",
         "lines": {"diversity": [p["diversity"] for p in points], "skin spread": [p["skin_std"] for p in points],
                   "worst condition MAE": [p["judge_mae_max"] for p in points]},
         "refs": {"goal 0.06 / 0.08": 0.06}},
    ], x_label="training minutes on this CPU (grey: stage 1 ends)", marks=[stage1_minutes])


if __name__ == "__main__":
    main()
