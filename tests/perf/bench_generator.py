"""Generator costs on this machine: training step time and peak memory per preset, and sampler
throughput, ONNX Runtime vs PyTorch eager, at batch 1/16/64.

    python tests/perf/bench_generator.py [--export exports/generator/1] [--run runs/generator]

Each preset is timed in its own process (peak RSS is per process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from timing import rate  # tests/perf/timing.py (the script's folder is on sys.path)

STEP_PROBE = r"""
import json, resource, sys, time, torch
from training.models.generator import AttributeGenerator
from training.train_generator import TRAIN_PRESETS, nelbo
name, batch = sys.argv[1], int(sys.argv[2])
cfg = TRAIN_PRESETS[name]
model = AttributeGenerator(cfg.model)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.randint(0, 256, (batch, 64, 64, 3), dtype=torch.uint8); c = torch.rand(batch, 5)
times = []
for i in range(4):
    t = time.perf_counter()
    loss = nelbo(model, x, c, 0, cfg).loss
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"preset": name, "batch": batch, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                  "s_per_step": sorted(times[1:])[1], "peak_rss_GiB": peak}))
"""




def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", type=Path, default=Path("exports/generator/1"))
    ap.add_argument("--run", type=Path, default=Path("runs/generator"))
    args = ap.parse_args()
    for name, batch in (("default", 16), ("celeba64", 8)):
        out = subprocess.run([sys.executable, "-c", STEP_PROBE, name, str(batch)], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr[-500:])
    if not args.export.exists():
        return
    import numpy as np
    import onnxruntime as ort

    sig = json.loads((args.export / "signature.json").read_text())
    sess = ort.InferenceSession(str(args.export / "model.onnx"), providers=["CPUExecutionProvider"])
    eager = None
    if (args.run / "state.pt").exists():
        import torch

        from training import config as config_io
        from training.models.generator import AttributeGenerator
        from training.train_generator import EMA, GeneratorTrainConfig

        cfg = config_io.load(GeneratorTrainConfig, args.run / "config.json")
        model = AttributeGenerator(cfg.model)
        ema = EMA(model, cfg.ema_decay)
        ema.load_state_dict(torch.load(args.run / "state.pt", map_location="cpu", weights_only=False)["ema"])
        eager = ema.shadow.eval()
    for batch in (1, 16, 64):
        rng = np.random.default_rng(0)
        feeds = {"conditions": rng.random((batch, 5), dtype=np.float32), "temperature": np.array(0.8, np.float32)}
        for g, shape in enumerate(sig["latent_groups"]):
            feeds[f"noise_{g}"] = rng.standard_normal((batch, *shape), dtype=np.float32)
        line = f"batch {batch:3d}: ONNX Runtime {rate(lambda f=feeds: sess.run(None, f), batch):7.1f} img/s"
        if eager is not None:
            import torch

            c = torch.from_numpy(feeds["conditions"])
            noise = [torch.from_numpy(feeds[f"noise_{g}"]) for g in range(len(sig["latent_groups"]))]

            def run(c=c, noise=noise):
                with torch.inference_mode():
                    eager.sample(c, noise, 0.8)

            line += f"   PyTorch eager {rate(run, batch):7.1f} img/s"
        print(line)


if __name__ == "__main__":
    main()
