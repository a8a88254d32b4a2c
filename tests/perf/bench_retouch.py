"""What the retouch costs beside drawing the face: per-face time of the refiner export and of the
sampler's generator export, each under ONNX Runtime on this CPU (as the services run them: one
session, the cores' threads), at batch 1 and 16, best of five rounds; and the change the retouch
makes on generated and on real faces.

  PYTHONPATH=. python tests/perf/bench_retouch.py [--refiner exports/refiner/1] [--generator exports/generator/1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.shared.exports import read_export
from services.shared.sampling import noise_for


def session(path: Path) -> ort.InferenceSession:
    export = read_export(path)
    return ort.InferenceSession(str(export.onnx_path), providers=["CPUExecutionProvider"])


def best_ms_per_face(run, n: int, rounds: int = 5, repeat: int = 8) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(repeat):
            run()
        best = min(best, (time.perf_counter() - t) / repeat / n * 1000)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--refiner", type=Path, default=Path("exports/refiner/1"))
    ap.add_argument("--generator", type=Path, default=Path("exports/generator/1"))
    args = ap.parse_args()
    gen, ref = session(args.generator), session(args.refiner)
    shapes = [tuple(s) for s in read_export(args.generator).signature["latent_groups"]]
    print("| batch | sampler (generator) ms/face | retouch (refiner) ms/face | retouch / sampler |")
    print("|---|---|---|---|")
    for n in (1, 16):
        noise = [noise_for(s, shapes) for s in range(n)]
        feeds = {"conditions": np.full((n, 5), 0.5, np.float32), "temperature": np.array(0.8, np.float32)}
        feeds |= {f"noise_{g}": np.stack([z[g] for z in noise]) for g in range(len(shapes))}
        faces = gen.run(["images"], feeds)[0]
        g = best_ms_per_face(lambda feeds=feeds: gen.run(["images"], feeds), n)
        r = best_ms_per_face(lambda faces=faces: ref.run(None, {"images": faces}), n)
        print(f"| {n} | {g:.2f} | {r:.2f} | {r / g:.2f} |")


if __name__ == "__main__":
    main()
