"""`facegen-train decoder`: stage 3 of the generator, decoder adaptation. The autoencoder's decoder
is fine-tuned adversarially on what the frozen prior actually samples (beside its
reconstructions), with the encoder, its latent normalisation and the prior unchanged; then the
sampler and encoder are exported with the new decoder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from training.cli_common import step_progress


@click.command("decoder")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--conditions", "conditions_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="the training images (default: <data>/conditions.csv, from `facegen-train label`)")
@click.option("--autoencoder", "autoencoder_run", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/autoencoder"), show_default=True, help="stage 1's run folder (model.pt)")
@click.option("--prior", "prior_run", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/generator"), show_default=True, help="stage 2's run folder (state.pt)")
@click.option("--preset", type=click.Choice(["tiny", "default"]), default="default", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config field, e.g. steps=3000")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/decoder"), show_default=True,
              help="run folder (an autoencoder folder: model.pt + config.json); rerunning resumes")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="export the sampler (prior + this decoder) here, e.g. exports/generator/1, and the encoder beside it")
@click.option("--attributes", "attribute_export", type=click.Path(file_okay=False, path_type=Path),
              default=Path("exports/attributes/1"), show_default=True,
              help="measures condition fidelity for the card (a quick check; the benchmark uses an independent judge)")
@click.option("--snapshot", type=click.IntRange(min=1), default=None,
              help="use the EMA weights of this step's snapshot (snapshots/stepNNNNNN.pt) instead of the last: "
                   "the run's quality curve may peak before its end")
def decoder_cmd(data, conditions_csv, autoencoder_run, prior_run, preset, overrides, out, export_dir, attribute_export,
                snapshot) -> None:
    """Adapt the decoder to the prior's samples; writes model.pt like `facegen-train autoencoder`."""
    import dataclasses

    import numpy as np
    import torch
    from tqdm import tqdm

    from training import config as config_io
    from training.generator_data import load_generator_set
    from training.models.latent_prior import TwoStageSampler
    from training.run_state import RunFolder
    from training.train_autoencoder import ADAPT_PRESETS, reconstruction_error, train
    from training.two_stage import export_two_stage, load_autoencoder, load_prior, sampler_report

    autoencoder = load_autoencoder(autoencoder_run)
    try:
        cfg = config_io.override(ADAPT_PRESETS[preset], config_io.parse_overrides(overrides))
        # the architecture is the one being fine-tuned, whatever the preset says
        cfg = dataclasses.replace(cfg, model=autoencoder.cfg, init_from=str(autoencoder_run))
        run = RunFolder(out, cfg)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    prior = load_prior(prior_run, seed=cfg.seed)
    if (prior.cfg.grid_size, prior.cfg.data_channels) != (autoencoder.cfg.latent_size, autoencoder.cfg.latent_channels):
        raise click.ClickException(f"{prior_run}'s prior models another grid than {autoencoder_run} makes")
    gs = load_generator_set(data, conditions_csv, cfg.model.image_size, cfg.seed)
    conditions = torch.from_numpy(gs.conditions[~gs.held_out].astype(np.float32))

    @torch.no_grad()
    def prior_sampler(k: int, temperatures: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cond = conditions[torch.randint(len(conditions), (k,), generator=gen)]
        scale = temperatures[:, None, None, None]  # mu + T·sigma·noise = mu + sigma·(T·noise)
        noise = [scale * torch.randn(k, *s, generator=gen) for s in prior.group_shapes]
        return prior.sample(cond, noise, 1.0)

    with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
        _, ema = train(gs.images[~gs.held_out], cfg, run, progress=step_progress(bar), prior_sampler=prior_sampler)
    model = ema.shadow.eval().requires_grad_(False)
    if snapshot is not None:
        path = run.snapshot_path(snapshot)
        if not path.exists():
            raise click.ClickException(f"{path} not found (snapshots: every snapshot_every={cfg.snapshot_every} steps)")
        model.load_state_dict(torch.load(path, map_location="cpu"))
    report = {"autoencoder": str(autoencoder_run), "prior": str(prior_run), "snapshot": snapshot,
              "held_out": reconstruction_error(model, gs.images[gs.held_out]) if gs.held_out.any() else None,
              **sampler_report(TwoStageSampler(prior, model).eval(), run.root, attribute_export)}
    torch.save(model.state_dict(), run.root / "model.pt")
    (run.root / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    run.close()
    click.echo(json.dumps(report, indent=2))
    if export_dir is not None:
        card = {"training_data": {"root": str(data), "images": int((~gs.held_out).sum())},
                "prior_run": str(prior_run), "decoder_config": config_io.to_dict(cfg), "metrics": report}
        export_two_stage(prior, model, export_dir, None, card, echo=click.echo)
