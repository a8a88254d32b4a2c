"""The exported generator's cost on this machine: sampler throughput under ONNX Runtime at batch
1 / 16 / 64 (all threads, and one thread as a served lane runs it), and the graph's size. The
training steps' cost is tests/perf/bench_train_step.py's.

    python tests/perf/bench_generator.py [--export exports/generator/1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from timing import rate  # tests/perf/timing.py (the script's folder is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", type=Path, default=Path("exports/generator/1"))
    args = ap.parse_args()
    sig = json.loads((args.export / "signature.json").read_text())
    print(f"{args.export}: {(args.export / 'model.onnx').stat().st_size / 1e6:.2f} MB, "
          f"{len(sig['latent_groups'])} latent groups")
    for threads in (0, 1):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(args.export / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        for batch in (1, 16, 64):
            rng = np.random.default_rng(0)
            feeds = {"conditions": rng.random((batch, 5), dtype=np.float32), "temperature": np.array(0.8, np.float32)}
            for g, shape in enumerate(sig["latent_groups"]):
                feeds[f"noise_{g}"] = rng.standard_normal((batch, *shape), dtype=np.float32)
            print(f"{'all threads' if threads == 0 else 'one thread '} batch {batch:3d}: "
                  f"{rate(lambda f=feeds, s=sess: s.run(None, f), batch):7.1f} img/s")


if __name__ == "__main__":
    main()
