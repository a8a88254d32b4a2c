"""`facegen-train attributes` (train + evaluate + export), `facegen-train label`, and
`facegen-train hand-labels` (which images to label by hand, with what the dataset already knows)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from training.cli_common import open_dataset_or_exit, step_progress


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
    from tqdm import tqdm

    from services.shared.labels import read_conditions_csv
    from training import config as config_io
    from training.run_state import RunFolder
    from training.train_attributes import TRAIN_PRESETS, load_labelled, outside_files, report, split, train

    if hand_labels is None and not (data / "hand_labels.csv").exists():
        raise click.ClickException(
            f"{data / 'hand_labels.csv'} not found: the attribute model trains on hand labels only. "
            f"`facegen-train label-ui --data {data}` opens a labelling page for the images to label (the "
            "first 1000 female by file name) and saves hand_labels.csv as you go; `facegen-train "
            f"hand-labels --data {data}` writes the same sheet as a CSV to fill in; or pass --hand-labels FILE")
    try:
        cfg = config_io.override(TRAIN_PRESETS[preset], config_io.parse_overrides(overrides))
        hand = _hand_labels(hand_labels or data / "hand_labels.csv", data, allow_partial)
        run = RunFolder(out, cfg)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    ds = open_dataset_or_exit(data)
    with tqdm(total=len(hand), unit="img", desc="decode") as bar:
        labelled, problems = load_labelled(ds, hand, sorted(hand), cfg, progress=bar.update)
    for p in problems[:20]:
        click.echo(f"  skipped {p}", err=True)
    splits = split(labelled, cfg)
    try:
        with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
            model = train(splits, cfg, run, progress=step_progress(bar))
    except ValueError as exc:  # nothing readable to learn from
        raise click.ClickException(f"{data}: {exc} ({len(hand)} listed, {len(problems)} unreadable)") from exc
    if not len(splits["val"].files):
        click.echo(f"warning: none of the {len(hand)} hand-labelled image(s) fell in the validation split "
                   f"({cfg.val_fraction:.0%} by file name), so there is no validation error", err=True)
    outside = None
    truth_csv = data / "labels.csv"
    if truth_csv.exists() and cfg.eval_outside:  # ground truth is known (the procedural set)
        truth = read_conditions_csv(truth_csv)
        files = outside_files(ds, truth, set(hand), cfg.eval_outside, cfg.seed)
        outside, _ = load_labelled(ds, truth, files, cfg)
    result = report(model, splits, outside, run)
    run.close()
    click.echo(json.dumps(result, indent=2))
    if export_dir is not None:
        from training.export import export_model
        from training.train_attributes import export_spec

        card = {"training_data": {"root": str(data), "hand_labels": len(hand), "counts": result["counts"]},
                "config": config_io.to_dict(cfg), "metrics": result}
        card = export_model(model, export_spec(cfg, version=export_dir.name), export_dir, card)
        click.echo(f"exported to {export_dir} ({card['onnx_bytes'] / 1e6:.2f} MB)")


def _hand_labels(path: Path, data: Path, allow_partial: bool) -> dict[str, dict[str, float]]:
    """The labelled rows of a hand-labelling sheet; a sheet with blank rows is refused unless
    `allow_partial`, and one with none labelled always."""
    from services.shared.labels import complete, read_hand_labels

    rows = read_hand_labels(path)
    hand = complete(rows)
    if len(hand) < len(rows):
        todo = f"{path}: {len(hand)} of {len(rows)} images labelled, {len(rows) - len(hand)} still blank"
        if not hand:
            raise ValueError(f"{todo}: nothing to train on; label them with `facegen-train label-ui --data {data}`")
        if not allow_partial:
            raise ValueError(f"{todo}; finish them (`facegen-train label-ui --data {data}`) or pass "
                             f"--allow-partial to train on the {len(hand)} labelled")
        click.echo(f"warning: {todo}; training on the {len(hand)} labelled (--allow-partial)", err=True)
    return hand


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
    from tqdm import tqdm

    from services.shared.selection import read_selected
    from training.label import label, write
    from training.select import OnnxImageModel

    ds = open_dataset_or_exit(data)
    try:
        selected = read_selected(selection or data / "selection.csv")
        model = OnnxImageModel(model_dir)
    except (ValueError, OSError, KeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not selected:  # an empty conditions.csv would only fail later, in the generator
        raise click.ClickException(f"{selection or data / 'selection.csv'} keeps no image: nothing to label "
                                   "(rerun `facegen-train select` with a lower --threshold?)")
    with tqdm(total=len(selected), unit="img", desc="label") as bar:
        rows, problems = label(ds, selected, model, progress=bar.update)
    for p in problems[:20]:
        click.echo(f"  skipped {p}", err=True)
    out = out or data / "conditions.csv"
    write(out, rows)
    click.echo(f"wrote {out}: {len(rows)} images labelled ({len(problems)} skipped)")


@click.command("hand-labels")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--n", type=click.IntRange(min=1), default=1000, show_default=True, help="images to label")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="default: <data>/hand_labels_todo.csv (never overwrites hand_labels.csv)")
def hand_labels_cmd(data, n, out) -> None:
    """Write the hand-labelling sheet: the first N female images by file name, one row each, with
    the conditions the dataset already knows (CelebA's coarse eyes, mouth and hair colour) filled
    in and the rest blank. Fill the blanks with values in [0, 1] and save it as hand_labels.csv."""
    from services.shared.conditions import CONDITIONS
    from services.shared.labels import first_n_female, write_conditions_csv

    ds = open_dataset_or_exit(data)
    known = {r.file: r.conditions for r in ds.labelled if r.female}
    files = first_n_female(known, n)
    if not files:
        raise click.ClickException(f"{data}: no female-labelled images to label")
    out = out or data / "hand_labels_todo.csv"
    if out.resolve() == (data / "hand_labels.csv").resolve() and out.exists():
        raise click.ClickException(f"{out} exists: it holds someone's labels; write the sheet elsewhere")
    write_conditions_csv(out, {f: {c: known[f].get(c, "") for c in CONDITIONS} for f in files})  # "": to fill in
    blank = [c for c in CONDITIONS if any(c not in known[f] for f in files)]
    click.echo(f"wrote {out}: {len(files)} images; to fill in: {', '.join(blank) or 'nothing'}")
