"""`facegen-train generator`: stage 2 of the generator (the conditional NVAE over the autoencoder's
latent grid), then its evaluation and the exports of the sampler and the encoder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click


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
    from training.stages import configure
    from training.stages.generator import train_prior
    from training.train_latent_prior import TRAIN_PRESETS

    given = {"readjust_batches": readjust_batches, "readjust_temperature": readjust_temperature}
    cfg = configure(TRAIN_PRESETS, preset, overrides)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None})
    train_prior(data, cfg, out, autoencoder_run, conditions_csv, attribute_export, attributes_run, export_dir,
                encoder_dir, echo=click.echo)
