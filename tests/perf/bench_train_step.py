"""Training-step time of the two generator stages on this CPU: fp32 vs bf16 autocast, contiguous
vs channels-last, eager vs torch.compile, each timed in its own process (median of 6 steps after
warm-up; compile time reported apart).

    python tests/perf/bench_train_step.py [--stage autoencoder|prior] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = r"""
import dataclasses, json, sys, time, torch
from training.allocator import hold_freed_memory; hold_freed_memory()  # as facegen-train does
stage, batch, bf16, cl, comp = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1", sys.argv[5] == "1"
fmt = torch.channels_last if cl else torch.contiguous_format
if stage == "autoencoder":
    from training.models.autoencoder import Autoencoder, PatchDiscriminator
    from training.train_autoencoder import TRAIN_PRESETS, train_step
    cfg = dataclasses.replace(TRAIN_PRESETS["default"], bf16=bf16, adversarial_start=0)
    model, disc = Autoencoder(cfg.model).to(memory_format=fmt), PatchDiscriminator(cfg.disc_widths).to(memory_format=fmt)
    opt, opt_d = torch.optim.AdamW(model.parameters()), torch.optim.AdamW(disc.parameters())
    if comp:
        # forward methods, not the Sequentials: the adaptive weight reads the decoder's last layer by index
        model.forward, disc.forward = torch.compile(model.forward), torch.compile(disc.forward)
    x = torch.randint(0, 256, (batch, 64, 64, 3), dtype=torch.uint8)
    step = lambda: train_step(model, disc, opt, opt_d, x, 1, cfg)
else:
    from training.models.latent_prior import LatentPrior
    from training.train_latent_prior import TRAIN_PRESETS, negative_elbo
    cfg = dataclasses.replace(TRAIN_PRESETS["default"], bf16=bf16)
    model = LatentPrior(cfg.model).to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters())
    run = torch.compile(model) if comp else model
    g, c = torch.randn(batch, 4, 16, 16).to(memory_format=fmt), torch.rand(batch, 5)
    def step():
        loss = negative_elbo(run, g, c, 10**6, cfg)["loss"]
        opt.zero_grad(); loss.backward(); opt.step()
t0 = time.perf_counter(); step(); first = time.perf_counter() - t0
step()
times = []
for _ in range(6):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps({"stage": stage, "batch": batch, "bf16": bf16, "channels_last": cl, "compile": comp,
                  "s_per_step": sorted(times)[3], "first_step_s": first}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", choices=["autoencoder", "prior"], default="autoencoder")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--only-compile", action="store_true")
    args = ap.parse_args()
    ap_only = args.only_compile
    variants = [] if ap_only else [(b, c, 0) for b in (0, 1) for c in (0, 1)]
    variants += [] if args.no_compile else [(1, 0, 1), (0, 0, 1)]
    for bf16, cl, comp in variants:
        out = subprocess.run([sys.executable, "-c", PROBE, args.stage, str(args.batch), str(bf16), str(cl), str(comp)],
                             capture_output=True, text=True)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-400:]
        try:
            r = json.loads(line)
            print(f"{r['stage']:<12} batch {r['batch']} {'bf16' if r['bf16'] else 'fp32'} "
                  f"{'channels-last' if r['channels_last'] else 'contiguous   '} {'compile' if r['compile'] else 'eager  '}: "
                  f"{r['s_per_step']:.3f} s/step (first step {r['first_step_s']:.1f} s)", flush=True)
        except json.JSONDecodeError:
            print(f"bf16={bf16} channels_last={cl} compile={comp}: failed: {line}", flush=True)


if __name__ == "__main__":
    main()
