"""`facegen-train`: the training-side command line (data, models, export)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import numpy as np

from services.shared.conditions import CONDITIONS


class Commands(click.Group):
    """The facegen-train group: a stage that cannot run as asked says why, without a traceback
    (training/stages raise StageError without knowing about the command line)."""

    def invoke(self, ctx):
        from training.stages import StageError

        try:
            return super().invoke(ctx)
        except StageError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """facegen training: datasets, the four models, ONNX export."""
    from training.allocator import hold_freed_memory

    hold_freed_memory()


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file to write")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rows", type=click.IntRange(1, 32), default=4, show_default=True, help="rows of random faces")
@click.option("--cols", type=click.IntRange(1, 32), default=8, show_default=True)
@click.option("--sweep/--no-sweep", default=True, show_default=True,
              help="add one row per condition, varied 0 → 1 with the rest fixed")
@click.option("--zoom", type=click.IntRange(1, 8), default=2, show_default=True)
def samples(out, seed, rows, cols, sweep, zoom) -> None:
    """A grid of procedural faces (and condition sweeps) as one PNG."""
    if out.suffix.lower() != ".png":
        raise click.BadParameter(f"{out}: give a file name ending in .png", param_hint="--out")
    from PIL import Image

    from training.data.synthetic import SynthConfig, render, sample_face

    cfg = SynthConfig()
    rng = np.random.default_rng(seed)
    grid = [[render(sample_face(rng, cfg), cfg) for _ in range(cols)] for _ in range(rows)]
    if sweep:
        # a legible base for the sweeps: mid skin tone, mid background, frontal, eyes open
        base = dataclasses.replace(
            sample_face(rng, cfg, female=True), head=0.5, eyes=0.7, mouth=0.2, skin_tone=0.35, background=0.5
        )
        for c in CONDITIONS:
            grid.append([render(dataclasses.replace(base, **{c: v}), cfg) for v in np.linspace(0, 1, cols)])
    img = np.concatenate([np.concatenate(r, axis=1) for r in grid], axis=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).resize((img.shape[1] * zoom, img.shape[0] * zoom), Image.Resampling.NEAREST).save(out)
    note = f" (last {len(CONDITIONS)} rows: {', '.join(CONDITIONS)} from 0 to 1)" if sweep else ""
    click.echo(f"wrote {out}{note}")


@main.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--verify/--no-verify", default=True, show_default=True, help="open every image header")
def inspect(root, verify) -> None:
    """Recognise a dataset's layout and list what would be skipped."""
    from services.shared.layouts import open_dataset

    try:
        ds = open_dataset(root, verify=verify)
    except ValueError as exc:  # DatasetError / LabelFileError carry a message for the user
        raise click.ClickException(str(exc)) from exc
    click.echo(ds.summary())
    for p in ds.problems[:50]:
        click.echo(f"  skipped {p}")
    if len(ds.problems) > 50:
        click.echo(f"  … and {len(ds.problems) - 50} more")


from training.cli_all import all_cmd  # noqa: E402  (subcommands in their own modules)
from training.cli_attributes import attributes_cmd, hand_labels_cmd, label_cmd  # noqa: E402
from training.cli_autoencoder import autoencoder_cmd  # noqa: E402
from training.cli_checkpoint import checkpoint_cmd  # noqa: E402
from training.cli_critic import critic_cmd  # noqa: E402
from training.cli_decoder import decoder_cmd  # noqa: E402
from training.cli_evaluate import evaluate_generator_cmd  # noqa: E402
from training.cli_filter import filter_cmd, select_cmd  # noqa: E402
from training.cli_generator import generator_cmd  # noqa: E402
from training.cli_generator_pixel import generator_pixel_cmd  # noqa: E402
from training.cli_label_ui import label_ui_cmd  # noqa: E402
from training.cli_synth import synth  # noqa: E402

for _cmd in (synth, filter_cmd, select_cmd, hand_labels_cmd, label_ui_cmd, attributes_cmd, label_cmd, autoencoder_cmd,
             generator_cmd, decoder_cmd, checkpoint_cmd, generator_pixel_cmd, evaluate_generator_cmd, critic_cmd, all_cmd):
    main.add_command(_cmd)

if __name__ == "__main__":
    main()
