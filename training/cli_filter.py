"""`facegen-train filter` (train + calibrate + export) and `facegen-train select`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from training.cli_common import open_dataset_or_exit, step_progress


@click.command("filter")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="dataset with Female/ and Male/ folders (or CelebA)")
@click.option("--preset", type=click.Choice(["tiny", "default"]), default="default", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config field, e.g. steps=500")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/filter"), show_default=True,
              help="run folder; rerunning the same command resumes from its state")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="export the calibrated model here, e.g. exports/filter/1")
def filter_cmd(data, preset, overrides, out, export_dir) -> None:
    """Train the gender filter, calibrate it (temperature scaling) and optionally export it."""
    from tqdm import tqdm

    from training import config as config_io
    from training.run_state import RunFolder
    from training.train_filter import TRAIN_PRESETS, calibrate_and_report, load_splits, train

    try:
        cfg = config_io.override(TRAIN_PRESETS[preset], config_io.parse_overrides(overrides))
        run = RunFolder(out, cfg)
    except config_io.ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    ds = open_dataset_or_exit(data)
    click.echo(ds.summary())
    with tqdm(total=len(ds.labelled), unit="img", desc="decode") as bar:
        splits, problems = load_splits(ds, cfg, progress=bar.update)
    for p in [*ds.problems, *problems][:20]:
        click.echo(f"  skipped {p}", err=True)
    try:
        with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
            model = train(splits, cfg, run, progress=step_progress(bar))
    except ValueError as exc:  # a dataset the filter cannot learn from (one gender only)
        raise click.ClickException(f"{data}: {exc}") from exc
    report = calibrate_and_report(model, splits, run)
    run.close()
    click.echo(json.dumps(report, indent=2))
    if "warning" in report:
        click.echo(f"warning: {report['warning']}", err=True)
    if export_dir is not None:
        from training.export import export_model
        from training.train_filter import export_spec

        card = {
            "training_data": {"root": str(data), "layout": ds.layout, "summary": ds.summary(),
                              "counts": report["counts"]},
            "config": config_io.to_dict(cfg),
            "metrics": {k: report[k] for k in ("temperature", "test_before", "test_after")},
        }
        card = export_model(model, export_spec(cfg, version=export_dir.name), export_dir, card)
        size_mb, parity = card["onnx_bytes"] / 1e6, card["parity"]["max_abs_diff"]
        click.echo(f"exported to {export_dir} ({size_mb:.2f} MB, max |ORT − torch| per batch size {parity})")


@click.command("select")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("exports/filter/1"), show_default=True, help="exported filter")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="keep images with P(female) ≥ threshold")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV to write (default: <data>/selection.csv)")
def select_cmd(data, model_dir, threshold, out) -> None:
    """Score every image with the filter and write selection.csv (file,p_female,kept,reason)."""
    from tqdm import tqdm

    from services.shared.selection import write_selection
    from training.select import OnnxFilter, select

    ds = open_dataset_or_exit(data)
    try:
        model = OnnxFilter(model_dir)
    except (ValueError, OSError, KeyError) as exc:
        raise click.ClickException(f"cannot load the filter from {model_dir}: {exc}") from exc
    with tqdm(total=len(ds.records), unit="img", desc="score") as bar:
        decisions = select(ds, model, threshold, progress=bar.update)
    out = out or data / "selection.csv"
    write_selection(out, decisions)
    counts: dict[str, int] = {}
    for d in decisions:
        key = d.reason.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    click.echo(f"wrote {out}: {sum(d.kept for d in decisions)} kept of {len(decisions)} files; "
               + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
