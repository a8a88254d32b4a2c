"""What storing the procedural set with `--colours K` costs the models trained on it.

    facegen-train synth --out data/synth16 --n 10000 --seed 0 --colours 16
    facegen-train filter --data data/synth16 --preset default --out runs/filter16 --export runs/filter16/export
    facegen-train attributes --data data/synth16 --preset default --out runs/attributes16 --export runs/attributes16/export
    PYTHONPATH=. python tests/perf/palette_models.py --full data/synth10k --palette data/synth16 \\
        --filter runs/filter16/export --attributes runs/attributes16/export

Both sets must be the same faces (same --n and --seed), stored in full colour and with a palette.
Prints, for the shipped models (trained on full colour) and the ones trained on the palette set,
each read on both sets:
- filter: accuracy, ROC-AUC and ECE on the test split (the split the filter's training holds out);
- attributes: MAE against the ground truth per condition on images outside the hand labels (the
  attribute model trains on the hand labels only).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from services.core.exports import load_session, run_images
from services.shared.conditions import CONDITIONS
from services.shared.layouts import open_dataset
from training.calibration import ece, roc_auc
from training.train_filter import TRAIN_PRESETS, load_splits

REPO = Path(__file__).resolve().parents[2]


def filter_rows(models: dict[str, Path], sets: dict[str, Path]) -> None:
    tests = {name: load_splits(open_dataset(root), TRAIN_PRESETS["default"])[0] for name, root in sets.items()}
    for model, path in models.items():
        export, session, _ = load_session(path)
        for name, splits in tests.items():
            x, y = splits.images["test"], splits.labels["test"]
            p = run_images(session, export, x)["p_female"].astype(np.float64)
            acc = float(((p >= 0.5) == (y > 0.5)).mean())
            print(f"filter {model:24s} on {name:11s} test (n={len(y)}): accuracy {acc:.4f}, "
                  f"AUC {roc_auc(p, y):.4f}, ECE {ece(p, y):.4f}")


def attribute_rows(models: dict[str, Path], sets: dict[str, Path], n: int) -> None:
    full = next(iter(sets.values()))
    hand = {r["file"] for r in csv.DictReader((full / "hand_labels.csv").open())}
    rows = [r for r in csv.DictReader((full / "labels.csv").open()) if r["file"] not in hand]
    rows = rows[:: max(1, len(rows) // n)][:n]
    truth = np.array([[float(r[c]) for c in CONDITIONS] for r in rows])
    images = {name: np.stack([np.asarray(Image.open(root / r["file"]).convert("RGB")) for r in rows])
              for name, root in sets.items()}
    for model, path in models.items():
        export, session, _ = load_session(path)
        for name, x in images.items():
            mae = np.abs(run_images(session, export, x)["conditions"] - truth).mean(0)
            print(f"attributes {model:20s} on {name:11s} (n={len(rows)}): MAE "
                  + ", ".join(f"{c} {m:.3f}" for c, m in zip(CONDITIONS, mae, strict=True)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", type=Path, required=True, help="the set in full colour")
    ap.add_argument("--palette", type=Path, required=True, help="the same faces stored with --colours K")
    ap.add_argument("--filter", type=Path, required=True, help="filter export trained on the palette set")
    ap.add_argument("--attributes", type=Path, required=True, help="attribute export trained on the palette set")
    ap.add_argument("--n", type=int, default=2000, help="images for the attribute MAE")
    args = ap.parse_args()
    sets = {"full colour": args.full, "palette": args.palette}
    filter_rows({"trained on full colour": REPO / "exports" / "filter" / "1", "trained on palette": args.filter}, sets)
    attribute_rows({"trained on full colour": REPO / "exports" / "attributes" / "1", "trained on palette": args.attributes},
                   sets, args.n)


if __name__ == "__main__":
    main()
