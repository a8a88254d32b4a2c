"""`facegen-train attributes` (train + evaluate + export), `facegen-train label`, and
`facegen-train hand-labels` (which images to label by hand, with what the dataset already knows)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("attributes")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--hand-labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV file,eyes,mouth,hair_color,background,head (default: <data>/hand_labels.csv)")
@click.option("--allow-partial", is_flag=True,
              help="train on the labelled rows of a sheet that still has blank ones (default: refuse)")
@click.option("--preset", type=click.Choice(["tiny", "default"]), default="default", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config field")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/attributes"), show_default=True)
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="export here, e.g. exports/attributes/1")
def attributes_cmd(data, hand_labels, allow_partial, preset, overrides, out, export_dir) -> None:
    """Train the attribute regressor on the hand labels only, evaluate, optionally export."""
    from training.stages import configure
    from training.stages.attributes import train_attributes
    from training.train_attributes import TRAIN_PRESETS

    train_attributes(data, configure(TRAIN_PRESETS, preset, overrides), out, hand_labels, allow_partial, export_dir,
                     echo=click.echo)


@click.command("label")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--selection", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="the filter's selection.csv (default: <data>/selection.csv)")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("exports/attributes/1"), show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="default: <data>/conditions.csv")
def label_cmd(data, selection, model_dir, out) -> None:
    """Write conditions.csv: the attribute model's conditions for every selected image."""
    from training.stages.data import label

    label(data, model_dir, selection, out, echo=click.echo)


@click.command("hand-labels")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--n", type=click.IntRange(min=1), default=1000, show_default=True, help="images to label")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="default: <data>/hand_labels_todo.csv (never overwrites hand_labels.csv)")
def hand_labels_cmd(data, n, out) -> None:
    """Write the hand-labelling sheet: the first N female images by file name, one row each, with
    the conditions the dataset already knows (CelebA's coarse eyes, mouth and hair colour) filled
    in and the rest blank. Fill the blanks with values in [0, 1] and save it as hand_labels.csv."""
    from training.stages.data import hand_label_sheet

    hand_label_sheet(data, n, out, echo=click.echo)
