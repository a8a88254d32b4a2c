"""The generator's sample-quality benchmark: what an exported generator draws, judged by judges that
took no part in training it, each figure printed beside its references from the same run and n.

Real faces come from a labelled set the generator never saw (e.g. `facegen-train synth --seed 101`):
its female faces split into two disjoint sets A and B of n each. Samples are drawn through the
exported ONNX graph, as the sampler service draws them (seed → noise by the service's rule),
with A's conditions, so real and generated differ only in how they look.

References: two real sets (A vs B: the floor every figure is read against) and real vs the same
faces blurred (A vs blur(A): what "recognisable but soft" scores).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.shared.conditions import CONDITIONS
from training.quality import metrics


@dataclass(frozen=True)
class BenchmarkConfig:
    n: int = 1000  # faces per set (real A, real B, blurred A, samples per temperature)
    temperatures: tuple[float, ...] = (0.8,)  # the first is the one the goals are judged at (the service default)
    blur_sigma: float = 1.5  # pixels
    k: int = 3  # neighbours of precision / recall
    diversity_groups: int = 64  # condition vectors …
    diversity_size: int = 8  # … with this many faces each
    near_frontal: float = 0.2  # |head − 0.5| below this counts as near-frontal for the face detector
    seed: int = 0


@dataclass(frozen=True)
class RealSet:
    images: np.ndarray  # uint8 [N, H, W, 3]
    conditions: np.ndarray  # float32 [N, 5]
    skin_tone: np.ndarray  # float32 [N], 0 light … 1 dark
    files: tuple[str, ...] = ()  # each face's path under the set's folder


def load_real(real_dir: Path, n: int, seed: int, size: int = 64) -> tuple[RealSet, RealSet]:
    """Two disjoint sets of n female faces from `real_dir/labels.csv` (conditions, `female`,
    `skin_tone`), shuffled with `seed`."""
    from services.shared.images import read
    from training.data.preprocess import Preprocess, crop_and_resize

    labels = Path(real_dir) / "labels.csv"
    if not labels.exists():
        raise ValueError(f"{labels} not found: the benchmark needs a labelled set the generator never saw "
                         "(e.g. `facegen-train synth --out data/bench --n 5000 --seed 101`)")
    with labels.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("female", "1") == "1"]
    missing = {"skin_tone", *CONDITIONS} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{labels}: no column(s) {', '.join(sorted(missing))}")
    if len(rows) < 2 * n:
        raise ValueError(f"{labels}: {len(rows)} female faces, the benchmark needs 2 × n = {2 * n}")
    rows.sort(key=lambda r: r["file"])
    order = np.random.default_rng(seed).permutation(len(rows))[: 2 * n]
    pre = Preprocess(size, size)
    sets = []
    for part in (order[:n], order[n:]):
        picked = [rows[i] for i in part]
        images = np.stack([crop_and_resize(read(Path(real_dir) / r["file"]), pre) for r in picked])
        cond = np.array([[float(r[c]) for c in CONDITIONS] for r in picked], np.float32)
        sets.append(RealSet(images, cond, np.array([float(r["skin_tone"]) for r in picked], np.float32),
                            tuple(r["file"] for r in picked)))
    return sets[0], sets[1]


def _haar_rate(images: np.ndarray, head: np.ndarray, band: float) -> tuple[float, int]:
    from training.data.haar import HaarProbe

    probe = HaarProbe()
    pick = np.abs(head - 0.5) < band
    hits = [probe.exactly_one(img) for img in images[pick]]
    return (float(np.mean(hits)) if hits else float("nan")), int(pick.sum())


def _judge_mae(judge, images: np.ndarray, wanted: np.ndarray) -> dict[str, float]:
    err = np.abs(judge(images) - wanted).mean(axis=0)
    return {c: float(e) for c, e in zip(CONDITIONS, err, strict=True)}


@dataclass
class Judges:
    """The benchmark's fixed parts, built once: the real sets, the feature net, the attribute
    judge, the references and the real sets' features."""
    a: RealSet
    b: RealSet
    net: object
    judge: object
    cuts: tuple[float, float]
    f_a: np.ndarray
    references: dict


def judges(real_dir: Path, judge_export: Path, cfg: BenchmarkConfig, log=print) -> Judges:
    from training.quality.feature_net import features, load_feature_net
    from training.select import OnnxImageModel

    a, b = load_real(real_dir, cfg.n, cfg.seed)
    net, judge = load_feature_net(), OnnxImageModel(judge_export)
    log(f"real sets: 2 × {cfg.n} female faces from {real_dir}; features: MobileNetV2 (ImageNet), pooled, 1280-d")
    f_a, f_b = features(net, a.images), features(net, b.images)
    f_blur = features(net, metrics.gaussian_blur(a.images, cfg.blur_sigma))
    lum_a = metrics.skin_luminance(a.images)
    cuts = metrics.thirds_thresholds(lum_a, a.skin_tone)
    rng = np.random.default_rng(cfg.seed + 1)
    picks = np.stack([rng.choice(cfg.n, cfg.diversity_size, replace=False) for _ in range(cfg.diversity_groups)])
    refs = {
        "fd_real_real": metrics.frechet_distance(f_a, f_b),
        "fd_real_blurred": metrics.frechet_distance(f_a, f_blur),
        "precision_recall_real_real": metrics.precision_recall(f_a, f_b, cfg.k),
        "precision_recall_real_blurred": metrics.precision_recall(f_a, f_blur, cfg.k),
        "haar_real": _haar_rate(a.images, a.conditions[:, CONDITIONS.index("head")], cfg.near_frontal)[0],
        "diversity_real_random": metrics.diversity(a.images[picks]),
        "skin_std_real": float(lum_a.std()),
        "skin_thirds_real": metrics.skin_thirds(lum_a, cuts),
        "skin_luminance_vs_tone_corr": float(np.corrcoef(lum_a, a.skin_tone)[0, 1]),
        "judge_mae_real": _judge_mae(judge, a.images, a.conditions),
    }
    return Judges(a, b, net, judge, cuts, f_a, refs)


def sample_figures(generate, j: Judges, cfg: BenchmarkConfig, t: float, samples_png: Path | None = None) -> dict:
    """Every figure of the samples at temperature t, `generate(conditions, t, seeds)` → uint8
    faces: faces for real set A's conditions (seeds
    seed … seed + n − 1), and groups of faces for fixed conditions for the diversity."""
    from training.quality.feature_net import features

    a, refs = j.a, j.references
    images = generate(a.conditions, t, np.arange(cfg.seed, cfg.seed + cfg.n))
    if samples_png is not None:
        from training.eval_generator import grid

        grid(images[:64], 8).save(samples_png)
    f_g = features(j.net, images)
    g_cond = np.repeat(a.conditions[np.arange(cfg.diversity_groups) % cfg.n], cfg.diversity_size, axis=0)
    g_seeds = np.arange(10**6, 10**6 + len(g_cond)) + cfg.seed
    groups = generate(g_cond, t, g_seeds).reshape(cfg.diversity_groups, cfg.diversity_size, *images.shape[1:])
    lum = metrics.skin_luminance(images)
    fd = metrics.frechet_distance(j.f_a, f_g)
    p, r = metrics.precision_recall(j.f_a, f_g, cfg.k)
    haar, frontal = _haar_rate(images, a.conditions[:, CONDITIONS.index("head")], cfg.near_frontal)
    mae = _judge_mae(j.judge, images, a.conditions)
    return {
        "temperature": t, "fd": fd, "fd_over_blurred": fd / refs["fd_real_blurred"], "precision": p, "recall": r,
        "haar": haar, "near_frontal": frontal, "diversity": metrics.diversity(groups),
        "skin_std": float(lum.std()), "skin_std_over_real": float(lum.std()) / max(refs["skin_std_real"], 1e-9),
        "skin_thirds": metrics.skin_thirds(lum, j.cuts), "judge_mae": mae, "judge_mae_max": max(mae.values()),
    }


@dataclass(frozen=True)
class Served:
    """What the pipeline serves: each face the best of `oversample` candidates by the pipeline's
    rule (services/shared/ranking.py), judged by the critic and read by the attribute model the
    pipeline runs, after the retouch when there is one."""
    critic: Path
    attributes: Path
    oversample: int


def served(generate, spec: Served, retouch=None):
    """`generate` as the pipeline serves it: face i of the seeds s_i is the kept one of the
    candidates drawn with seeds s_i·k … s_i·k + k − 1 (a one-face request with seed s_i·k and
    every condition given), retouched by `retouch` (uint8 → uint8) when given. Each face's k
    candidates are one batch, as that request's are in the services: ONNX Runtime's generator
    rounds a pixel differently at other batch sizes."""
    from services.shared import ranking
    from training.select import OnnxImageModel

    critic, attributes, k = OnnxImageModel(spec.critic), OnnxImageModel(spec.attributes), spec.oversample

    def one(condition: np.ndarray, t: float, seed: int) -> np.ndarray:
        cand = np.repeat(condition[None], k, axis=0)
        images = generate(cand, t, seed * k + np.arange(k))
        if retouch is not None:
            images = retouch(images)
        ranks = ranking.rank(critic(images), ranking.condition_error(attributes(images), cand))
        return images[ranking.best_of_groups(ranks, k)[0]]

    def draw(conditions: np.ndarray, t: float, seeds: np.ndarray) -> np.ndarray:
        return np.stack([one(c, t, int(s)) for c, s in zip(np.asarray(conditions, np.float32), seeds, strict=True)])

    return draw


def evaluate(generator_export: Path, real_dir: Path, judge_export: Path, cfg: BenchmarkConfig = BenchmarkConfig(),
             log=print, samples_png: Path | None = None, retouch_export: Path | None = None,
             serve: Served | None = None) -> dict:
    """Every figure of the benchmark for `generator_export` (drawn through ONNX Runtime, as the
    sampler service draws), with its references (a dict). With `retouch_export` (a refiner
    export), the same faces at the first temperature once more after the retouch, as the
    column "<T> retouched"; with `serve`, the faces the pipeline serves at the first temperature
    (oversampled, and retouched when `retouch_export` is given) as the column "<T> served", whose
    64 first faces go beside `samples_png` as <name>_served.png."""
    from training.generated import OnnxGenerator
    from training.select import OnnxImageModel

    j = judges(real_dir, judge_export, cfg, log)
    gen = OnnxGenerator(generator_export)
    retouch = OnnxImageModel(retouch_export) if retouch_export is not None else None
    report = {"n": cfg.n, "generator": str(generator_export), "judge": str(judge_export), "real": str(real_dir),
              "references": j.references, "samples": {}}

    def judged(column: str, s: dict) -> None:
        report["samples"][column] = s
        log(f"T = {column}: FD {s['fd']:.1f}, precision {s['precision']:.3f}, recall {s['recall']:.3f}, "
            f"Haar {s['haar']:.3f}")

    for i, t in enumerate(cfg.temperatures):
        judged(str(t), sample_figures(gen, j, cfg, t, samples_png if i == 0 else None))
    t = cfg.temperatures[0]
    if retouch is not None:
        s = sample_figures(lambda c, temp, seeds: retouch(gen(c, temp, seeds)), j, cfg, t)
        judged(f"{t} retouched", {**s, "retouch": str(retouch_export)})
    if serve is not None:
        shown = samples_png.with_name(samples_png.stem + "_served.png") if samples_png is not None else None
        s = sample_figures(served(gen, serve, retouch), j, cfg, t, shown)
        judged(f"{t} served", {**s, "oversample": serve.oversample, "retouch": str(retouch_export or "")})
    report["goals"] = goals(report)
    if serve is not None:
        report["goals_served"] = goals(report, f"{t} served")
    return report


GOALS = {  # (figure, how it passes), judged at the first temperature
    "fd_over_blurred": ("FD ≤ 0.15 × blurred-real FD", lambda s, r: s["fd_over_blurred"] <= 0.15),
    "precision": ("precision ≥ 0.5", lambda s, r: s["precision"] >= 0.5),
    "recall": ("recall ≥ 0.3", lambda s, r: s["recall"] >= 0.3),
    "haar": ("Haar exactly-one-face, near-frontal ≥ 0.9", lambda s, r: s["haar"] >= 0.9),
    "skin": ("skin spread ≥ 0.7 × real, every third drawn (≥ 5 %)",
             lambda s, r: s["skin_std_over_real"] >= 0.7 and min(s["skin_thirds"].values()) >= 0.05),
    "diversity": ("diversity at fixed conditions ≥ 0.08", lambda s, r: s["diversity"] >= 0.08),
    "judge_mae": ("each condition's MAE by the independent judge ≤ 0.06", lambda s, r: s["judge_mae_max"] <= 0.06),
}


def goals(report: dict, column: str | None = None) -> dict[str, dict]:
    """Each goal met or not by one column of samples (default: the first, the sampler alone)."""
    s = report["samples"][column] if column is not None else next(iter(report["samples"].values()))
    return {k: {"goal": text, "met": bool(check(s, report["references"]))} for k, (text, check) in GOALS.items()}


def table(report: dict) -> str:
    """The benchmark as a Markdown table: samples per temperature beside the references."""
    refs, samples = report["references"], report["samples"]
    temps = list(samples)
    def label(key: str) -> str:
        s = samples[key]
        if "oversample" in s:
            return f"served: T = {s['temperature']}, best of {s['oversample']}" + (", retouched" if s["retouch"] else "")
        return f"samples T = {key}"

    head = "| measure | " + " | ".join(label(t) for t in temps) + " | references (same run, same n) |"
    rows = [head, "|---|" + "---|" * len(temps) + "---|"]

    def row(name: str, values: list[str], ref: str) -> None:
        rows.append(f"| {name} | " + " | ".join(values) + f" | {ref} |")

    prr, prb = refs["precision_recall_real_real"], refs["precision_recall_real_blurred"]
    row("Fréchet distance, MobileNetV2 features", [f"{samples[t]['fd']:.1f} ({samples[t]['fd_over_blurred']:.2f} × blurred)"
                                                   for t in temps],
        f"real A vs real B {refs['fd_real_real']:.1f}; real vs blurred (σ = 1.5 px) {refs['fd_real_blurred']:.1f}")
    row(f"precision / recall (k = {3})", [f"{samples[t]['precision']:.3f} / {samples[t]['recall']:.3f}" for t in temps],
        f"real / real {prr[0]:.3f} / {prr[1]:.3f}; real / blurred {prb[0]:.3f} / {prb[1]:.3f}")
    row("Haar exactly one face, near-frontal", [f"{samples[t]['haar']:.3f} (of {samples[t]['near_frontal']})" for t in temps],
        f"real {refs['haar_real']:.3f}")
    row("diversity at fixed conditions", [f"{samples[t]['diversity']:.3f}" for t in temps],
        f"random real faces {refs['diversity_real_random']:.3f}")
    row("skin luminance spread (std)", [f"{samples[t]['skin_std']:.3f} ({samples[t]['skin_std_over_real']:.2f} × real)"
                                        for t in temps], f"real {refs['skin_std_real']:.3f}")
    thirds = lambda d: " / ".join(f"{d[k]:.2f}" for k in ("light", "mid", "dark"))  # noqa: E731
    row("skin thirds light / mid / dark", [thirds(samples[t]["skin_thirds"]) for t in temps],
        f"real {thirds(refs['skin_thirds_real'])}")
    for c in CONDITIONS:
        row(f"{c} MAE, independent judge", [f"{samples[t]['judge_mae'][c]:.3f}" for t in temps],
            f"judge on real faces {refs['judge_mae_real'][c]:.3f}")
    rows.append("")
    for key, what in (("goals", f"the sampler at T = {temps[0]}"), ("goals_served", "what the pipeline serves")):
        if key in report:
            rows.append(f"Goals, {what}: " + "; ".join(f"{g['goal']}: {'met' if g['met'] else 'NOT met'}"
                                                     for g in report[key].values()))
    return "\n".join(rows)
