"""The training loop every facegen model shares: AdamW with warm-up + cosine, a pure
`train_step` with a non-finite guard, periodic evaluation and resumable checkpoints.

A run draws its batch for step s from a generator seeded with (seed, s), so an interrupted run
resumed from state.pt continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.run_state import RunFolder, warmup_cosine

Batch = Any
LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]


@dataclass(frozen=True)
class LoopConfig:
    steps: int
    lr: float
    weight_decay: float
    warmup_steps: int
    eval_every: int
    seed: int
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    clip_grad_norm: float = 10.0


def train_step(model: torch.nn.Module, batch: Batch, opt: torch.optim.Optimizer, loss_fn: LossFn,
               clip: float = 10.0) -> dict:
    """One optimisation step; a non-finite loss or gradient skips the update (VDVAE's guard)."""
    model.train()
    loss = loss_fn(model, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    loss_v, norm_v = loss.item(), grad_norm.item()
    if not (np.isfinite(loss_v) and np.isfinite(norm_v)):
        opt.zero_grad(set_to_none=True)
        return {"loss": loss_v, "grad_norm": norm_v, "skipped": 1}
    opt.step()
    return {"loss": loss_v, "grad_norm": norm_v, "skipped": 0}


def fit(
    model: torch.nn.Module,
    cfg: LoopConfig,
    run: RunFolder,
    make_batch: Callable[[int, torch.Generator], Batch],
    loss_fn: LossFn,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    progress: Callable[[int, dict], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    extra_state: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """Train `model` for cfg.steps, resuming from run/state.pt when it exists.

    `on_step(step)` runs after each update (e.g. an EMA of the weights); `extra_state` holds more
    objects with a state_dict (the EMA weights, a regulariser's buffers) saved with the run."""
    extra_state = extra_state or {}
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps))
    start = run.load_state(model=model, opt=opt, sched=sched, **extra_state)
    for step in range(start, cfg.steps):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        m = train_step(model, make_batch(step, gen), opt, loss_fn, cfg.clip_grad_norm)
        sched.step()
        if on_step is not None and not m["skipped"]:
            on_step(step)
        run.log(step, lr=sched.get_last_lr()[0], **m)
        if progress:
            progress(step, m)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            if evaluate is not None:
                run.log(step, **evaluate(model))
            run.save_state(step + 1, model=model, opt=opt, sched=sched, **extra_state)
    return model
