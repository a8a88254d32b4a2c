"""`facegen-train generator-pixel`: the single-stage design (the conditional NVAE over pixels), kept for
comparison with the shipped two-stage generator (`facegen-train autoencoder` + `facegen-train generator`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from training.stages import step_progress


@click.command("generator-pixel")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--conditions", "conditions_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="file + five conditions per training image (default: <data>/conditions.csv, "
                                 "written by `facegen-train label`)")
@click.option("--preset", type=click.Choice(["tiny", "default", "celeba64"]), default="default", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config field, e.g. steps=3000")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/generator"), show_default=True)
@click.option("--attributes", "attribute_export", type=click.Path(file_okay=False, path_type=Path),
              default=Path("exports/attributes/1"), show_default=True, help="measures condition fidelity")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="export the EMA sampler here, e.g. exports/generator/1")
@click.option("--attributes-run", "attributes_runs", type=click.Path(file_okay=False, path_type=Path), multiple=True,
              default=(Path("runs/attributes"),), show_default=True,
              help="trained attribute model (PyTorch) used when condition_weight > 0 (it judges prior samples) or "
                   "detail_weight > 0 (its saliency weighs pixels); give it more than once to average several")
@click.option("--readjust-bn", "readjust_batches", type=click.IntRange(min=0), default=100, show_default=True,
              help="batches of prior samples that re-estimate the EMA decoder's BatchNorm statistics before the "
                   "samples, fidelity and export (NVAE's readjust_bn; 0 keeps the training statistics)")
@click.option("--readjust-temperature", type=click.FloatRange(0.0, 2.0), default=0.8, show_default=True)
def generator_pixel_cmd(data, conditions_csv, preset, overrides, out, attribute_export, export_dir, attributes_runs,
                  readjust_batches, readjust_temperature) -> None:
    """Train the generator, report bits/dim, KL per group, sample and sweep grids, fidelity."""
    from tqdm import tqdm

    from training import config as config_io
    from training.eval_generator import condition_fidelity, held_out, sample_grids
    from training.generator_data import load_generator_set
    from training.loop import finish_distributed
    from training.run_state import RunFolder
    from training.train_generator import TRAIN_PRESETS, train

    try:
        cfg = config_io.override(TRAIN_PRESETS[preset], config_io.parse_overrides(overrides))
        run = RunFolder(out, cfg)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    gs = load_generator_set(data, conditions_csv, cfg.model.image_size, cfg.seed)
    images, c, is_val = gs.images, gs.conditions, gs.held_out
    with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
        attributes = None
        if cfg.needs_judges:
            from training.train_attributes import load_trained

            attributes = [load_trained(r)[0] for r in attributes_runs]
        _, ema = train(images[~is_val], c[~is_val], cfg, run, progress=step_progress(bar), attributes=attributes)
    if not finish_distributed():
        return  # under torchrun, rank 0 alone evaluates and exports
    model = ema.shadow.eval()
    # with the statistics of training; a set too small to hold any image out has no held-out score
    report = {"held_out": None}
    if is_val.any():
        report["held_out"] = held_out(model, images[is_val], c[is_val])
    else:
        click.echo("warning: no image was held out (5 % by file name), so there is no held-out bits/dim", err=True)
    if readjust_batches:
        from training.train_generator import readjust_bn

        readjust_bn(model, readjust_temperature, readjust_batches, seed=cfg.seed)
        report["readjust_bn"] = {"batches": readjust_batches, "temperature": readjust_temperature}
    report["grids"] = [str(p) for p in sample_grids(model, run.root)]
    if attribute_export.exists():
        report["condition_fidelity"] = condition_fidelity(model, attribute_export)
    (run.root / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    run.close()
    click.echo(json.dumps(report, indent=2))
    if export_dir is not None:
        from training.export import export_model
        from training.models.generator import Sampler
        from training.train_generator import export_spec

        card = {"training_data": {"root": str(data), "images": int((~is_val).sum())},
                "config": config_io.to_dict(cfg), "metrics": report}
        card = export_model(Sampler(model), export_spec(model, version=export_dir.name), export_dir, card)
        click.echo(f"exported to {export_dir} ({card['onnx_bytes'] / 1e6:.2f} MB)")
