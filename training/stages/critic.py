"""The critic stage: critic A (flags regions), the retouch built on it (with the latent denoiser
distilled from the generator's prior), an independent critic B that judges the retouch, their
evaluation and exports."""

from __future__ import annotations

import json
import time
from pathlib import Path

from training.stages import StageError, open_dataset, print_echo, step_progress

GENERATED_SEEDS = {"a": 0, "b": 1_000_000, "eval": 2_000_000, "denoiser": 3_000_000}  # disjoint generator seeds per use


def train_and_export(data: Path, conditions_csv: Path | None, generator_export: Path, attributes_run: Path,
                     attribute_export: Path | None, cfg, out: Path, critic_export: Path | None,
                     refiner_export: Path | None, echo=print_echo, autoencoder: Path | None = None,
                     judge_export: Path | None = None, prior: Path | None = None) -> dict:
    """Train on the images of `conditions_csv` (default <data>/conditions.csv) against the faces of
    `generator_export`; evaluate the retouch with critic B (and `judge_export`, an independent
    attribute judge, when present); export critic B and the retouch; returns the report. The
    projection retouch's latent denoiser (cfg.denoiser.passes > 0) is distilled from `prior`, the
    generator's stage-2 run, on generated faces of its own (seeds no critic sees)."""
    import numpy as np
    from tqdm import tqdm

    from services.shared.conditions import CONDITIONS
    from services.shared.labels import read_conditions_csv
    from training.data.loader import load_images, split_of
    from training.data.preprocess import Preprocess
    from training.eval_critic import before_after_grid, retouch_report, separation
    from training.export import export_model
    from training.generated import OnnxGenerator
    from training.models.refiner import ProjectionRetouch, Retouch
    from training.run_state import RunFolder
    from training.train_attributes import load_trained as load_attributes
    from training.train_critic import (
        calibrate_projection,
        critic_export_spec,
        projection_export_spec,
        refiner_export_spec,
        train_critic,
        train_refiner,
    )

    conditions_csv = conditions_csv or data / "conditions.csv"
    if not conditions_csv.exists():
        raise StageError(f"{conditions_csv} not found (run `facegen-train label` first)")
    if cfg.retouch not in ("projection", "simgan"):
        raise StageError(f"retouch must be projection or simgan, got {cfg.retouch!r}")
    if cfg.retouch == "projection" and autoencoder is None:
        raise StageError("the projection retouch needs the generator's autoencoder (--autoencoder DIR)")
    denoised = cfg.retouch == "projection" and cfg.denoiser.passes > 0
    if denoised and prior is None:
        raise StageError("the projection retouch's latent denoiser is distilled from the generator's prior "
                         "(--prior DIR), or set denoiser.passes=0 for none")

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    conds = read_conditions_csv(conditions_csv)
    ds = open_dataset(data)
    records = [r for r in ds.records if r.file in conds]
    size = cfg.critic.image_size
    images, kept, problems = load_images(records, Preprocess(size, size))
    files = [r.file for r in kept]
    part = np.array([split_of(f, cfg.seed, cfg.val_fraction, 0.0) for f in files])
    half = np.array([split_of(f, cfg.seed + 1, 0.5, 0.0) for f in files])  # 'val' here = split B
    real = {"a": images[(part == "train") & (half == "train")], "b": images[(part == "train") & (half == "val")],
            "eval": images[part == "val"]}
    empty = [name for name, k in (("critic A", "a"), ("critic B", "b"), ("held out", "eval")) if not len(real[k])]
    if empty:  # checked before minutes of generating: each part needs real faces of its own
        raise StageError(
            f"{data}: {len(files)} readable training image(s) leave no real image for {', '.join(empty)} "
            f"(the set is split by file name: {cfg.val_fraction:.0%} held out, the rest halved between the two critics)")
    pool = np.array([[conds[f][c] for c in CONDITIONS] for f in files], np.float32)
    generator = OnnxGenerator(generator_export, cfg.threads)
    if generator.image_size != size:
        raise StageError(f"generator makes {generator.image_size}px faces; the critic expects {size}px")
    fake = {k: generator.pool(pool, n, cfg.temperatures, GENERATED_SEEDS[k])
            for k, n in (("a", cfg.generated), ("b", cfg.generated), ("eval", cfg.eval_faces))}
    echo(f"real images: A {len(real['a'])}, B {len(real['b'])}, held out {len(real['eval'])} "
         f"({len(problems)} unreadable); generated: {cfg.generated} per critic, {cfg.eval_faces} held out")
    timings["data_s"] = time.perf_counter() - t0

    stages = ("critic_a", "refiner", "critic_b") if cfg.retouch == "simgan" else ("critic_a", "critic_b")
    runs = {k: RunFolder(out / k, cfg) for k in stages}
    if denoised:
        runs["denoiser"] = RunFolder(out / "denoiser", cfg.denoiser)

    def stage(name: str, steps: int, fn):
        t = time.perf_counter()
        with tqdm(total=steps, desc=name, unit="step") as bar:
            result = fn(step_progress(bar))
        timings[f"{name}_s"] = time.perf_counter() - t
        return result

    critic_a = stage("critic_a", cfg.critic_steps,
                     lambda p: train_critic(real["a"], fake["a"], cfg, runs["critic_a"], cfg.seed, p))
    attributes, _ = load_attributes(attributes_run)
    if cfg.retouch == "simgan":
        refiner = stage("refiner", cfg.refiner_steps,
                        lambda p: train_refiner(critic_a, attributes, real["a"], fake["a"], cfg, runs["refiner"], p))
    critic_b = stage("critic_b", cfg.critic_steps,
                     lambda p: train_critic(real["b"], fake["b"], cfg, runs["critic_b"], cfg.independent_seed, p))

    t = time.perf_counter()
    critic_a, critic_b = critic_a.folded(), critic_b.folded()
    calibration = None
    if cfg.retouch == "simgan":
        retoucher = Retouch(refiner, critic_a).eval()
    else:
        from training.two_stage import load_autoencoder

        ae, denoiser, reads = load_autoencoder(autoencoder), None, None
        if denoised:
            from training.train_latent_denoiser import train_denoiser
            from training.two_stage import load_prior

            reads = attributes.eval().requires_grad_(False)
            t_d = time.perf_counter()
            seed, n = GENERATED_SEEDS["denoiser"], cfg.denoiser.faces
            faces = generator.pool(pool, n, cfg.temperatures, seed)
            denoiser, figures = train_denoiser(load_prior(prior), ae, reads, faces, generator.pool_conditions(pool, n, seed),
                                               cfg.denoiser, runs["denoiser"])
            timings["denoiser_s"] = time.perf_counter() - t_d
            t = time.perf_counter()  # evaluate_s: the calibration and evaluation, as without a denoiser
            echo(f"latent denoiser ({cfg.denoiser.passes} prior projections): held-out MSE {figures['val_mse']:.4f} "
                 f"(grid left as it is: {figures['val_mse_identity']:.4f})")
        retoucher = ProjectionRetouch(critic_a, ae, cfg.projection, denoiser, reads).eval()
        # on real and generated faces critic A never saw (critic B's), not the held-out ones reported on
        projection, tried = calibrate_projection(retoucher, real["b"][:500], cfg.real_change_max, fake["b"][:500],
                                                 cfg.flagged_share_min)
        retoucher = retoucher.with_config(projection)
        calibration = {"flag_below": projection.flag_below, "ramp": projection.ramp, "tried": tried,
                       "real_change_max": cfg.real_change_max, "flagged_share_min": cfg.flagged_share_min}
        echo(f"projection retouch: flag_below {projection.flag_below} (real faces changed ≤ {cfg.real_change_max}/255, "
             f"≥ {cfg.flagged_share_min:.0%} of the change on generated faces where critic A flags)")
    if attribute_export is not None and attribute_export.exists():
        from training.select import OnnxImageModel

        measure, measured_by = OnnxImageModel(attribute_export), str(attribute_export)
    else:
        from training.train_attributes import predict

        measured_by = str(attributes_run)  # its PyTorch model, without an export

        def measure(x):
            return predict(attributes, x)
    report = {"critic_a_held_out": separation(critic_a, real["eval"], fake["eval"]),
              "critic_b_held_out": separation(critic_b, real["eval"], fake["eval"])}
    independent = None
    if judge_export is not None and judge_export.exists():
        from training.select import OnnxImageModel

        independent = OnnxImageModel(judge_export)
    report["retouch"], after = retouch_report(retoucher, critic_b, fake["eval"], real["eval"], measure, independent)
    if calibration is not None:
        report["retouch"]["calibration"] = calibration
    report["grid"] = str(before_after_grid(critic_b, fake["eval"], after, out / "retouch_before_after.png"))
    timings["evaluate_s"] = time.perf_counter() - t
    report["timings"] = timings
    for r in runs.values():
        r.close()
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    card = {"training_data": {"root": str(data), "real_images": {k: len(v) for k, v in real.items()},
                              "generator": str(generator_export), "generated_per_critic": cfg.generated},
            # the models that judged or steered this run, so a card says what its figures were read by
            "inputs": {"attributes_run": str(attributes_run), "drift_measured_by": measured_by,
                       "judge": None if independent is None else str(judge_export)},
            "metrics": report}
    from training import config as config_io

    if critic_export is not None:
        c = export_model(critic_b, critic_export_spec(cfg.critic, critic_export.name), critic_export,
                         {**card, "config": config_io.to_dict(cfg.critic), "which": "independent critic B"})
        echo(f"exported critic to {critic_export} ({c['onnx_bytes'] / 1e6:.2f} MB)")
    if refiner_export is not None:
        spec = (refiner_export_spec(cfg.refiner, refiner_export.name) if cfg.retouch == "simgan"
                else projection_export_spec(retoucher.cfg, cfg.critic.image_size, refiner_export.name, denoised))
        which = ("refiner + critic A (flags regions)" if cfg.retouch == "simgan"
                 else "critic A (flags regions) + the generator's autoencoder (projects them)"
                 + (" + the latent denoiser distilled from its prior, fed the attribute model's reading" if denoised else ""))
        c = export_model(retoucher, spec, refiner_export, {**card, "config": config_io.to_dict(cfg), "which": which,
                                                           "autoencoder": None if autoencoder is None else str(autoencoder),
                                                           "prior": str(prior) if denoised else None})
        echo(f"exported refiner to {refiner_export} ({c['onnx_bytes'] / 1e6:.2f} MB)")
    return report
