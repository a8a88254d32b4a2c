"""The attribute stage: train the condition regressor on the hand labels only, evaluate it,
optionally export it."""

from __future__ import annotations

import json
from pathlib import Path

from training.stages import Echo, StageError, open_dataset, print_echo, run_folder, step_progress


def train_attributes(data: Path, cfg, out: Path, hand_labels: Path | None = None, allow_partial: bool = False,
                     export_dir: Path | None = None, echo: Echo = print_echo) -> dict:
    """Train on the rows of `hand_labels` (default <data>/hand_labels.csv); a sheet with blank rows
    is refused unless `allow_partial`. Evaluates on the validation split and, where the dataset
    has ground truth (labels.csv), on images outside the sheet; returns the report."""
    from tqdm import tqdm

    from services.shared.labels import read_conditions_csv
    from training import config as config_io
    from training.train_attributes import load_labelled, outside_files, report, split, train

    sheet = hand_labels or data / "hand_labels.csv"
    if not sheet.exists():
        raise StageError(
            f"{sheet} not found: the attribute model trains on hand labels only. "
            f"`facegen-train label-ui --data {data}` opens a labelling page for the images to label (the "
            "first 1000 female by file name) and saves hand_labels.csv as you go; `facegen-train "
            f"hand-labels --data {data}` writes the same sheet as a CSV to fill in; or pass --hand-labels FILE")
    hand = labelled_rows(sheet, data, allow_partial, echo)
    run = run_folder(out, cfg)
    ds = open_dataset(data)
    with tqdm(total=len(hand), unit="img", desc="decode") as bar:
        labelled, problems = load_labelled(ds, hand, sorted(hand), cfg, progress=bar.update)
    for p in problems[:20]:
        echo(f"  skipped {p}", err=True)
    splits = split(labelled, cfg)
    try:
        with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
            model = train(splits, cfg, run, progress=step_progress(bar))
    except ValueError as exc:  # nothing readable to learn from
        raise StageError(f"{data}: {exc} ({len(hand)} listed, {len(problems)} unreadable)") from exc
    if not len(splits["val"].files):
        echo(f"warning: none of the {len(hand)} hand-labelled image(s) fell in the validation split "
             f"({cfg.val_fraction:.0%} by file name), so there is no validation error", err=True)
    outside = None
    truth_csv = data / "labels.csv"
    if truth_csv.exists() and cfg.eval_outside:  # ground truth is known (the procedural set)
        truth = read_conditions_csv(truth_csv)
        files = outside_files(ds, truth, set(hand), cfg.eval_outside, cfg.seed)
        outside, _ = load_labelled(ds, truth, files, cfg)
    result = report(model, splits, outside, run)
    run.close()
    echo(json.dumps(result, indent=2))
    if export_dir is not None:
        from training.export import export_model
        from training.train_attributes import export_spec

        card = {"training_data": {"root": str(data), "hand_labels": len(hand), "counts": result["counts"]},
                "config": config_io.to_dict(cfg), "metrics": result}
        card = export_model(model, export_spec(cfg, version=export_dir.name), export_dir, card)
        echo(f"exported to {export_dir} ({card['onnx_bytes'] / 1e6:.2f} MB)")
    return result


def labelled_rows(path: Path, data: Path, allow_partial: bool, echo: Echo = print_echo) -> dict[str, dict[str, float]]:
    """The labelled rows of a hand-labelling sheet; a sheet with blank rows is refused unless
    `allow_partial`, and one with none labelled always."""
    from services.shared.labels import complete, read_hand_labels

    try:
        rows = read_hand_labels(path)
    except ValueError as exc:
        raise StageError(str(exc)) from exc
    hand = complete(rows)
    if len(hand) < len(rows):
        todo = f"{path}: {len(hand)} of {len(rows)} images labelled, {len(rows) - len(hand)} still blank"
        if not hand:
            raise StageError(f"{todo}: nothing to train on; label them with `facegen-train label-ui --data {data}`")
        if not allow_partial:
            raise StageError(f"{todo}; finish them (`facegen-train label-ui --data {data}`) or pass "
                             f"--allow-partial to train on the {len(hand)} labelled")
        echo(f"warning: {todo}; training on the {len(hand)} labelled (--allow-partial)", err=True)
    return hand
