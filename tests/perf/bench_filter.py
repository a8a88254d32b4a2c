"""Filter inference speed: ONNX Runtime vs PyTorch eager, images/s at batch 1 and 64 (CPU).

    python tests/perf/bench_filter.py [--export exports/filter/1] [--run runs/filter] [--seconds 5]

PyTorch weights come from the training run folder (model.pt); without one, only ORT is timed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from timing import rate  # tests/perf/timing.py (the script's folder is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", type=Path, default=Path("exports/filter/1"))
    ap.add_argument("--run", type=Path, default=Path("runs/filter"))
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()

    from services.core.exports import load_session

    export, session, provider = load_session(args.export)
    torch_model = None
    if (args.run / "model.pt").exists():
        import torch

        from training.train_filter import load_trained

        torch_model, _ = load_trained(args.run)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"ORT provider {provider}; model {args.export} ({export.card['onnx_bytes'] / 1e6:.2f} MB)")
    rng = np.random.default_rng(0)
    for batch in (1, 64):
        x = rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)
        ort_rate = rate(lambda x=x: session.run(None, {"images": x}), batch, args.seconds)
        line = f"batch {batch:3d}: ONNX Runtime {ort_rate:7.0f} img/s"
        if torch_model is not None:
            import torch

            xt = torch.from_numpy(x)

            def eager(xt=xt):
                with torch.inference_mode():
                    torch_model(xt)

            line += f"   PyTorch eager {rate(eager, batch, args.seconds):7.0f} img/s"
        print(line)


if __name__ == "__main__":
    main()
