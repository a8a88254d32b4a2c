"""Does the decoder draw what the encoder saw? Condition MAE of a generator run's posterior
reconstructions of real faces, judged by exported attribute models.

    PYTHONPATH=. python tests/perf/reconstruction_fidelity.py --run runs/generator_detail
        [--attributes /tmp/judgeC/1 exports/attributes/1] [--data data/synth10k] [--n 256]

Takes the last n female faces of <data>/labels.csv (ground truth), encodes each with its true
conditions and decodes the posterior sample with the run's EMA weights (training BatchNorm
statistics), and prints per judge the MAE against the ground truth for the originals and for
the reconstructions: a judge reads the originals well, so a large gap means the decoder leaves
that condition out. Also writes originals over reconstructions to <run>/reconstructions.png.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from services.shared.conditions import CONDITIONS
from training import config as config_io
from training.models.generator import AttributeGenerator, mixture_mean, to_uint8
from training.select import OnnxImageModel
from training.train_generator import EMA, GeneratorTrainConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--attributes", nargs="+", default=["exports/attributes/1"])
    ap.add_argument("--data", type=Path, default=Path("data/synth10k"))
    ap.add_argument("--n", type=int, default=256)
    args = ap.parse_args()
    cfg = config_io.load(GeneratorTrainConfig, args.run / "config.json")
    ema = EMA(AttributeGenerator(cfg.model), cfg.ema_decay)
    ema.load_state_dict(torch.load(args.run / "state.pt", map_location="cpu", weights_only=False)["ema"])
    model = ema.shadow
    with (args.data / "labels.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["female"] == "1"][-args.n:]
    x = np.stack([np.asarray(Image.open(args.data / r["file"]).convert("RGB")) for r in rows])
    truth = np.array([[float(r[c]) for c in CONDITIONS] for r in rows], np.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        params, _ = model.eval()(torch.from_numpy(x), torch.from_numpy(truth))
    recon = to_uint8(mixture_mean(params, cfg.model.mixtures)).numpy()
    for judge in args.attributes:
        read = OnnxImageModel(judge)
        for name, images in (("originals", x), ("reconstructions", recon)):
            err = np.abs(read(images) - truth).mean(axis=0)
            per = ", ".join(f"{c} {e:.3f}" for c, e in zip(CONDITIONS, err, strict=True))
            print(f"{judge} {name}: mean {err.mean():.3f} ({per})")
    rows_img = [np.concatenate(list(a[:8]), axis=1) for a in (x, recon)]
    Image.fromarray(np.concatenate(rows_img, axis=0)).save(args.run / "reconstructions.png")


if __name__ == "__main__":
    main()
