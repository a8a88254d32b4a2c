"""The shipped filter on real photographs (the scikit-image smoke set, built on the fly).

    python tests/perf/eval_filter_real.py [--export exports/filter/1]

Only the astronaut (female) and cameraman (male) images carry labels; the figures show how a
filter trained on procedural faces transfers to photographs (expect little: it was never
trained on any).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from services.shared.layouts import open_dataset
from tests.real_images import build_real_smoke
from training.calibration import ece, roc_auc
from training.data.loader import load_images
from training.select import OnnxFilter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", type=Path, default=Path("exports/filter/1"))
    args = ap.parse_args()
    model = OnnxFilter(args.export)
    with tempfile.TemporaryDirectory() as tmp:
        build_real_smoke(Path(tmp))
        ds = open_dataset(tmp)
        images, records, _ = load_images(ds.labelled, model.preprocess)
        p = model(images)
        y = np.array([r.female for r in records], np.float64)
        for r, pf in zip(records, p, strict=True):
            print(f"{r.file:40s} P(female) = {pf:.4f}")
        print(f"labelled real photos: n={len(y)}, accuracy {((p >= 0.5) == (y > 0.5)).mean():.3f}, "
              f"ROC-AUC {roc_auc(p, y):.3f}, ECE {ece(p, y):.3f}")


if __name__ == "__main__":
    main()
