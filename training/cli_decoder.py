"""`facegen-train decoder`: stage 3 of the generator, decoder adaptation. The autoencoder's decoder
is fine-tuned adversarially on what the frozen prior actually samples (beside its
reconstructions), with the encoder, its latent normalisation and the prior unchanged; then the
sampler and encoder are exported with the new decoder."""

from __future__ import annotations

from pathlib import Path

import click


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
@click.option("--attributes-run", "attributes_run", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/attributes"), show_default=True,
              help="the trained attribute model that reads the prior's decoded samples when condition_weight > 0")
@click.option("--snapshot", type=click.IntRange(min=1), default=None,
              help="use the EMA weights of this step's snapshot (snapshots/stepNNNNNN.pt) instead of the last: "
                   "the run's quality curve may peak before its end")
def decoder_cmd(data, conditions_csv, autoencoder_run, prior_run, preset, overrides, out, export_dir, attribute_export,
                attributes_run, snapshot) -> None:
    """Adapt the decoder to the prior's samples; writes model.pt like `facegen-train autoencoder`."""
    from training.stages import configure
    from training.stages.generator import adapt_decoder
    from training.train_autoencoder import ADAPT_PRESETS

    adapt_decoder(data, configure(ADAPT_PRESETS, preset, overrides), out, autoencoder_run, prior_run, conditions_csv,
                  attribute_export, export_dir, snapshot, attributes_run, echo=click.echo)
