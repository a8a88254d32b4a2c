"""`facegen-train autoencoder`: stage 1 of the generator (pixels ↔ latent grid)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("autoencoder")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--conditions", "conditions_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="the training images (default: <data>/conditions.csv, from `facegen-train label`)")
@click.option("--preset", type=click.Choice(["tiny", "default"]), default="default", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config field, e.g. steps=3000")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/autoencoder"),
              show_default=True, help="run folder; rerunning the same command resumes from its state")
def autoencoder_cmd(data, conditions_csv, preset, overrides, out) -> None:
    """Train the generator's autoencoder; writes model.pt (EMA weights + latent scale) and metrics."""
    from training.stages import configure
    from training.stages.generator import train_autoencoder
    from training.train_autoencoder import TRAIN_PRESETS

    train_autoencoder(data, configure(TRAIN_PRESETS, preset, overrides), out, conditions_csv, echo=click.echo)
