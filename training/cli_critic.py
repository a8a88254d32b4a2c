"""`facegen-train critic`: critic A, the refiner, independent critic B, evaluation, export
(training/stages/critic.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("critic")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--conditions", "conditions_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="the generator's training images (default: <data>/conditions.csv)")
@click.option("--generator", "generator_export", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("exports/generator/1"), show_default=True)
@click.option("--attributes-run", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("runs/attributes"), show_default=True,
              help="trained attribute model (PyTorch, for the condition-consistency gradient)")
@click.option("--attributes", "attribute_export", type=click.Path(file_okay=False, path_type=Path),
              default=Path("exports/attributes/1"), show_default=True, help="measures condition drift")
@click.option("--autoencoder", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("training/checkpoints/generator_v2/decoder"), show_default=True,
              help="the generator's autoencoder (model.pt + config.json), which the projection retouch projects onto")
@click.option("--prior", type=click.Path(file_okay=False, path_type=Path),
              default=Path("training/checkpoints/generator_v2/prior_anchored"), show_default=True,
              help="the generator's prior (stage-2 run or compact checkpoint), which the retouch's latent denoiser "
                   "is distilled from")
@click.option("--judge", "judge_export", type=click.Path(file_okay=False, path_type=Path),
              default=Path("exports/judge/1"), show_default=True,
              help="an independent attribute judge (used when present) for the condition drift of the retouch")
@click.option("--preset", type=click.Choice(["tiny", "default"]), default="default", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config field, e.g. refiner_steps=300")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/critic"), show_default=True)
@click.option("--export-critic", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="e.g. exports/critic/1")
@click.option("--export-refiner", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="e.g. exports/refiner/1")
def critic_cmd(data, conditions_csv, generator_export, attributes_run, attribute_export, autoencoder, prior, judge_export, preset,
               overrides, out, export_critic, export_refiner) -> None:
    """Train the critic and the refiner; report the retouch as judged by an independent critic."""
    from training.stages import configure
    from training.stages.critic import train_and_export
    from training.train_critic import TRAIN_PRESETS

    cfg = configure(TRAIN_PRESETS, preset, overrides)
    report = train_and_export(data, conditions_csv, generator_export, attributes_run, attribute_export, cfg, out,
                              export_critic, export_refiner, echo=click.echo, autoencoder=autoencoder,
                              judge_export=judge_export, prior=prior)
    click.echo(json.dumps(report, indent=2))
