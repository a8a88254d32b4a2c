"""`facegen-train autoencoder`: stage 1 of the generator (pixels ↔ latent grid)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from training.cli_common import step_progress


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
    import torch
    from tqdm import tqdm

    from training import config as config_io
    from training.generator_data import load_generator_set
    from training.models.autoencoder import Autoencoder
    from training.run_state import RunFolder
    from training.train_autoencoder import TRAIN_PRESETS, fit_scale, reconstruction_error, train

    try:
        cfg = config_io.override(TRAIN_PRESETS[preset], config_io.parse_overrides(overrides))
        Autoencoder(cfg.model)  # an inconsistent shape fails here, before the data is read
        run = RunFolder(out, cfg)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    gs = load_generator_set(data, conditions_csv, cfg.model.image_size, cfg.seed)
    with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
        _, ema = train(gs.images[~gs.held_out], cfg, run, progress=step_progress(bar))
    model = ema.shadow.eval()
    fit_scale(model, gs.images[~gs.held_out])
    report = {"held_out": reconstruction_error(model, gs.images[gs.held_out]) if gs.held_out.any() else None,
              "latent_scale": model.latent_scale.tolist()}
    torch.save(model.state_dict(), run.root / "model.pt")
    (run.root / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    run.close()
    click.echo(json.dumps(report, indent=2))
