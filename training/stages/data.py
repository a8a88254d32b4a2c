"""The dataset stages: render the procedural set, select the generator's images with the filter,
label them with the attribute model, and write the hand-labelling sheet."""

from __future__ import annotations

import time
from pathlib import Path

from training.stages import Echo, StageError, open_dataset, print_echo


def synth_config(n: int, seed: int, size: int, hand_labels: int, unlabeled_fraction: float, label_noise: float,
                 cue_spread: float, colours: int):
    """The SynthDatasetConfig of the synth settings a user gives (`facegen-train synth`'s options,
    `facegen-train all --set synth.KEY=VALUE`); a value out of range is the user's to fix."""
    from training.data.synth_dataset import SynthDatasetConfig
    from training.data.synthetic import SynthConfig

    try:
        return SynthDatasetConfig(n=n, seed=seed, unlabeled_fraction=unlabeled_fraction, label_noise=label_noise,
                                  hand_labels=hand_labels, colours=colours,
                                  render=SynthConfig(size=size, cue_spread=cue_spread))
    except ValueError as exc:
        raise StageError(str(exc)) from None


def synth(out: Path, cfg, workers: int = 1, echo: Echo = print_echo) -> dict[str, int]:
    """Render `cfg` (a SynthDatasetConfig) into `out` in the seed's layout, with ground truth;
    returns the image count per top folder."""
    from tqdm import tqdm

    from training.data.synth_dataset import write_synth_dataset

    t0 = time.perf_counter()
    with tqdm(total=cfg.n, unit="img", desc="synth") as bar:
        placed = write_synth_dataset(out, cfg, workers=workers, progress=bar.update)
    dt = time.perf_counter() - t0
    counts = {k.rstrip("/"): sum(p.file.startswith(k) for p in placed) for k in ("Female/", "Male/", "unlabeled/")}
    size_mb = sum(f.stat().st_size for f in out.rglob("*.png")) / 2**20
    echo(f"wrote {cfg.n} images to {out} in {dt:.1f} s ({cfg.n / dt:.0f} img/s, {size_mb:.1f} MB): "
         + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def select(data: Path, model_dir: Path, threshold: float, out: Path | None = None, echo: Echo = print_echo) -> Path:
    """Score every image with the exported filter and write selection.csv (default
    <data>/selection.csv) by the rule the filter service's jobs follow."""
    from tqdm import tqdm

    from services.shared.selection import write_selection
    from training.select import OnnxFilter, select

    ds = open_dataset(data)
    try:
        model = OnnxFilter(model_dir)
    except (ValueError, OSError, KeyError) as exc:
        raise StageError(f"cannot load the filter from {model_dir}: {exc}") from exc
    with tqdm(total=len(ds.records), unit="img", desc="score") as bar:
        decisions = select(ds, model, threshold, progress=bar.update)
    out = out or data / "selection.csv"
    write_selection(out, decisions)
    counts: dict[str, int] = {}
    for d in decisions:
        key = d.reason.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    echo(f"wrote {out}: {sum(d.kept for d in decisions)} kept of {len(decisions)} files; "
         + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return out


def label(data: Path, model_dir: Path, selection: Path | None = None, out: Path | None = None,
          echo: Echo = print_echo) -> Path:
    """Write conditions.csv (default <data>/conditions.csv): the attribute model's conditions for
    every selected image."""
    from tqdm import tqdm

    from services.shared.selection import read_selected
    from training.label import label, write
    from training.select import OnnxImageModel

    selection = selection or data / "selection.csv"
    ds = open_dataset(data)
    try:
        selected = read_selected(selection)
        model = OnnxImageModel(model_dir)
    except (ValueError, OSError, KeyError) as exc:
        raise StageError(str(exc)) from exc
    if not selected:  # an empty conditions.csv would only fail later, in the generator
        raise StageError(f"{selection} keeps no image: nothing to label "
                         "(rerun `facegen-train select` with a lower --threshold?)")
    with tqdm(total=len(selected), unit="img", desc="label") as bar:
        rows, problems = label(ds, selected, model, progress=bar.update)
    for p in problems[:20]:
        echo(f"  skipped {p}", err=True)
    out = out or data / "conditions.csv"
    write(out, rows)
    echo(f"wrote {out}: {len(rows)} images labelled ({len(problems)} skipped)")
    return out


def hand_label_sheet(data: Path, n: int, out: Path | None = None, echo: Echo = print_echo) -> Path:
    """The hand-labelling sheet (default <data>/hand_labels_todo.csv): the first n female images
    by file name, with what the dataset already knows filled in and the rest blank."""
    from services.shared.conditions import CONDITIONS
    from services.shared.labels import first_n_female, write_conditions_csv

    ds = open_dataset(data)
    known = {r.file: r.conditions for r in ds.labelled if r.female}
    files = first_n_female(known, n)
    if not files:
        raise StageError(f"{data}: no female-labelled images to label")
    out = out or data / "hand_labels_todo.csv"
    if out.resolve() == (data / "hand_labels.csv").resolve() and out.exists():
        raise StageError(f"{out} exists: it holds someone's labels; write the sheet elsewhere")
    write_conditions_csv(out, {f: {c: known[f].get(c, "") for c in CONDITIONS} for f in files})  # "": to fill in
    blank = [c for c in CONDITIONS if any(c not in known[f] for f in files)]
    echo(f"wrote {out}: {len(files)} images; to fill in: {', '.join(blank) or 'nothing'}")
    return out
