"""`facegen-train synth`: the procedural face set in the seed's layout, with ground truth."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.command("synth")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="dataset folder to write")
@click.option("--n", type=click.IntRange(min=1), default=10_000, show_default=True, help="number of images")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True, help="image side in pixels")
@click.option("--hand-labels", type=click.IntRange(min=0), default=1000, show_default=True,
              help="N: hand_labels.csv holds the first N female images by file name")
@click.option("--unlabeled-fraction", type=click.FloatRange(0, 1), default=0.2, show_default=True)
@click.option("--label-noise", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="probability that a labelled image sits in the wrong gender folder")
@click.option("--cue-spread", type=click.FloatRange(min=0.0), default=0.3, show_default=True,
              help="spread of the gender cues around their means; larger means more overlap")
@click.option("--colours", type=click.IntRange(0, 256), default=0, show_default=True,
              help="0: full-colour PNGs (~4.3 KB a face); K ≥ 2: a palette of K colours per image "
                   "(16: ~0.9 KB, posterised; 10,000 faces in ~9 MB)")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default=True)
def synth(out, n, seed, size, hand_labels, unlabeled_fraction, label_noise, cue_spread, colours, workers) -> None:
    """Render the procedural face set in the seed's layout, with ground truth."""
    from training.stages import StageError
    from training.stages.data import synth as render_set
    from training.stages.data import synth_config

    try:
        cfg = synth_config(n, seed, size, hand_labels, unlabeled_fraction, label_noise, cue_spread, colours)
    except StageError as e:
        raise click.UsageError(str(e)) from None
    render_set(out, cfg, workers=workers, echo=click.echo)
