"""The filter stage: train the gender classifier, calibrate it, optionally export it."""

from __future__ import annotations

import json
from pathlib import Path

from training.stages import Echo, StageError, open_dataset, print_echo, run_folder, step_progress


def train_filter(data: Path, cfg, out: Path, export_dir: Path | None = None, echo: Echo = print_echo) -> dict:
    """Train on `data` (Female/ and Male/ folders, or CelebA) into the run folder `out` (a rerun
    resumes), calibrate (temperature scaling), export to `export_dir`; returns the report."""
    from tqdm import tqdm

    from training import config as config_io
    from training.train_filter import calibrate_and_report, load_splits, train

    run = run_folder(out, cfg)
    ds = open_dataset(data)
    echo(ds.summary())
    with tqdm(total=len(ds.labelled), unit="img", desc="decode") as bar:
        splits, problems = load_splits(ds, cfg, progress=bar.update)
    for p in [*ds.problems, *problems][:20]:
        echo(f"  skipped {p}", err=True)
    try:
        with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
            model = train(splits, cfg, run, progress=step_progress(bar))
    except ValueError as exc:  # a dataset the filter cannot learn from (one gender only)
        raise StageError(f"{data}: {exc}") from exc
    report = calibrate_and_report(model, splits, run)
    run.close()
    echo(json.dumps(report, indent=2))
    if "warning" in report:
        echo(f"warning: {report['warning']}", err=True)
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
        echo(f"exported to {export_dir} ({size_mb:.2f} MB, max |ORT − torch| per batch size {parity})")
    return report

