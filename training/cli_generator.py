"""`facegen-train generator`: stage 2 of the generator (the conditional NVAE over the autoencoder's
latent grid), then its evaluation and the exports of the sampler and the encoder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from training.cli_common import step_progress
from training.two_stage import export_two_stage, load_autoencoder, load_prior, sampler_report


@click.command("generator")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--conditions", "conditions_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="file + five conditions per training image (default: <data>/conditions.csv, "
                                 "written by `facegen-train label`)")
@click.option("--autoencoder", "autoencoder_run", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/autoencoder"), show_default=True, help="stage 1's run folder")
@click.option("--preset", type=click.Choice(["tiny", "default", "celeba64"]), default="default", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config field, e.g. steps=3000")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/generator"), show_default=True)
@click.option("--attributes", "attribute_export", type=click.Path(file_okay=False, path_type=Path),
              default=Path("exports/attributes/1"), show_default=True,
              help="measures condition fidelity (a quick check; the benchmark uses an independent judge)")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="export the sampler here, e.g. exports/generator/1")
@click.option("--encoder-export", "encoder_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="export the encoder here (default with --export: exports/encoder/<same version> beside it)")
@click.option("--attributes-run", "attributes_run", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/attributes"), show_default=True,
              help="trained attribute model (PyTorch) that reads the prior's samples when condition_weight > 0")
@click.option("--readjust-bn", "readjust_batches", type=click.IntRange(min=0), default=None,
              help="batches of prior samples that re-estimate the EMA prior's BatchNorm statistics before the "
                   "samples, fidelity and export (NVAE's readjust_bn; 0 keeps the training statistics) "
                   "[default: the config's readjust_batches, 100]; the same as --set readjust_batches=N")
@click.option("--readjust-temperature", type=click.FloatRange(0.0, 2.0), default=None,
              help="[default: the config's readjust_temperature, 0.8]; the same as --set readjust_temperature=T")
def generator_cmd(data, conditions_csv, autoencoder_run, preset, overrides, out, attribute_export, export_dir,
                  encoder_dir, attributes_run, readjust_batches, readjust_temperature) -> None:
    """Train the latent prior on stage 1's grids; report, sample, sweep, export sampler + encoder."""
    from tqdm import tqdm

    from training import config as config_io
    from training.generator_data import load_generator_set
    from training.loop import finish_distributed
    from training.models.latent_prior import LatentPrior, TwoStageSampler
    from training.run_state import RunFolder
    from training.train_generator import readjust_bn
    from training.train_latent_prior import TRAIN_PRESETS, Consistency, encode_set, held_out, train

    try:
        given = {"readjust_batches": readjust_batches, "readjust_temperature": readjust_temperature}
        cfg = config_io.override(TRAIN_PRESETS[preset], {**config_io.parse_overrides(overrides),
                                                         **{k: v for k, v in given.items() if v is not None}})
        LatentPrior(cfg.model)  # an inconsistent hierarchy fails here, before the data is read
        run = RunFolder(out, cfg)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    autoencoder = load_autoencoder(autoencoder_run)
    ae_cfg = autoencoder.cfg
    if (ae_cfg.latent_size, ae_cfg.latent_channels) != (cfg.model.grid_size, cfg.model.data_channels):
        raise click.ClickException(
            f"the prior models a {cfg.model.grid_size}×{cfg.model.grid_size}×{cfg.model.data_channels} grid but "
            f"{autoencoder_run} makes {ae_cfg.latent_size}×{ae_cfg.latent_size}×{ae_cfg.latent_channels}")
    gs = load_generator_set(data, conditions_csv, ae_cfg.image_size, cfg.seed)
    train_grids = encode_set(autoencoder, gs.images[~gs.held_out])
    judge = None
    if cfg.condition_weight > 0:
        from training.train_attributes import load_trained

        if not (attributes_run / "model.pt").exists():
            raise click.ClickException(f"condition_weight > 0 needs the trained attribute model: {attributes_run}/model.pt "
                                       "not found (`facegen-train attributes --out runs/attributes`)")
        anchor = load_prior(Path(cfg.anchor_from), seed=cfg.seed) if cfg.anchor_from and cfg.anchor_weight > 0 else None
        judge = Consistency(autoencoder, load_trained(attributes_run)[0], anchor)
    with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
        _, ema = train(train_grids, gs.conditions[~gs.held_out], cfg, run, progress=step_progress(bar), judge=judge)
    if not finish_distributed():
        return  # under torchrun, rank 0 alone evaluates and exports
    prior = ema.shadow.eval()
    report = {"held_out": None, "autoencoder": str(autoencoder_run)}
    if gs.held_out.any():
        report["held_out"] = held_out(prior, encode_set(autoencoder, gs.images[gs.held_out], mirrored=False)[0],
                                      gs.conditions[gs.held_out])
    else:
        click.echo("warning: no image was held out (5 % by file name), so there is no held-out score", err=True)
    if cfg.readjust_batches:
        readjust_bn(prior, cfg.readjust_temperature, cfg.readjust_batches, seed=cfg.seed)
        report["readjust_bn"] = {"batches": cfg.readjust_batches, "temperature": cfg.readjust_temperature}
    report.update(sampler_report(TwoStageSampler(prior, autoencoder).eval(), run.root, attribute_export))
    (run.root / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    run.close()
    click.echo(json.dumps(report, indent=2))
    if export_dir is not None:
        card = {"training_data": {"root": str(data), "images": int((~gs.held_out).sum())},
                "config": config_io.to_dict(cfg), "autoencoder_config": config_io.to_dict(ae_cfg), "metrics": report}
        export_two_stage(prior, autoencoder, export_dir, encoder_dir, card, echo=click.echo)
