"""`facegen-train filter` (train + calibrate + export) and `facegen-train select`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("filter")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="dataset with Female/ and Male/ folders (or CelebA)")
@click.option("--preset", type=click.Choice(["tiny", "default"]), default="default", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config field, e.g. steps=500")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/filter"), show_default=True,
              help="run folder; rerunning the same command resumes from its state")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="export the calibrated model here, e.g. exports/filter/1")
def filter_cmd(data, preset, overrides, out, export_dir) -> None:
    """Train the gender filter, calibrate it (temperature scaling) and optionally export it."""
    from training.stages import configure
    from training.stages.filter import train_filter
    from training.train_filter import TRAIN_PRESETS

    train_filter(data, configure(TRAIN_PRESETS, preset, overrides), out, export_dir, echo=click.echo)


@click.command("select")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("exports/filter/1"), show_default=True, help="exported filter")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="keep images with P(female) ≥ threshold")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV to write (default: <data>/selection.csv)")
def select_cmd(data, model_dir, threshold, out) -> None:
    """Score every image with the filter and write selection.csv (file,p_female,kept,reason)."""
    from training.stages.data import select

    select(data, model_dir, threshold, out, echo=click.echo)
