"""The training loop every facegen model shares: AdamW with warm-up + cosine, a pure
`train_step` with a non-finite guard, periodic evaluation and resumable checkpoints.

A run draws its batch for step s from a generator seeded with (seed, s), so an interrupted run
resumed from state.pt continues exactly as the uninterrupted one would have.

Devices: CUDA when available (the model, each batch and the extra state move there), else CPU.
Multi-GPU: launched by `torchrun --nproc_per_node=K`, WORLD_SIZE > 1 starts a process group
(NCCL on GPUs, gloo on CPUs) and, with `distributed=True`, wraps the model in
DistributedDataParallel; each rank draws its own batches (seeded with its rank too), and only
rank 0 logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

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

    @classmethod
    def of(cls, cfg, **changes) -> LoopConfig:
        """The loop settings of a stage config: every train config names them alike (steps, lr,
        weight_decay, warmup_steps, eval_every, seed, threads), so the settings a user types
        (`--set steps=…`) stay flat; `changes` for a stage that trains more than one model."""
        names = ("steps", "lr", "weight_decay", "warmup_steps", "eval_every", "seed", "threads")
        return cls(**{**{n: getattr(cfg, n) for n in names if hasattr(cfg, n)}, **changes})


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


def device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def to_device(batch: Any, dev: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(dev, non_blocking=True)
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(b, dev) for b in batch)
    return batch


def init_distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


_LEFT_KEY = "facegen/ranks_left"  # counts the ranks that have left the process group


def finish_distributed(timeout_s: float = 60.0) -> bool:
    """Leave the process group; True on the lead rank (or when not distributed).

    Without this, gloo's threads are still alive at interpreter exit and the process aborts
    ("terminate called without an active exception"), so torchrun reports a failed rank.
    After the group is gone each rank also waits (on the rendezvous store, which outlives the
    group) until every rank has torn its group down: on CPU, about one run in 150 aborted a rank
    at the end while its peer was still alive, so no rank now leaves — closing its sockets — while
    a peer is still inside destroy_process_group."""
    if not dist.is_initialized():
        return True
    lead, world = dist.get_rank() == 0, dist.get_world_size()
    store = dist.distributed_c10d._get_default_store()
    dist.barrier()
    dist.destroy_process_group()
    store.add(_LEFT_KEY, 1)
    deadline = time.monotonic() + timeout_s
    while store.add(_LEFT_KEY, 0) < world and time.monotonic() < deadline:
        time.sleep(0.01)
    return lead


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
    distributed: bool = False,
) -> torch.nn.Module:
    """Train `model` for cfg.steps, resuming from run/state.pt when it exists.

    `on_step(step)` runs after each update (e.g. an EMA of the weights); `extra_state` holds more
    objects with a state_dict (the EMA weights, a regulariser's buffers) saved with the run.
    `distributed=True` allows DDP under torchrun; the loss must then go through the model's
    forward (DDP synchronises gradients of forward passes only)."""
    extra_state = extra_state or {}
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = init_distributed() if distributed else (0, 1)
    dev = device()
    model.to(dev)
    for v in extra_state.values():
        if isinstance(v, torch.nn.Module):
            v.to(dev)
    trained = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps))
    start = run.load_state(model=model, opt=opt, sched=sched, **extra_state)
    lead = rank == 0
    for step in range(start, cfg.steps):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step + 7919 * rank)
        m = train_step(trained, to_device(make_batch(step, gen), dev), opt, loss_fn, cfg.clip_grad_norm)
        sched.step()
        if on_step is not None and not m["skipped"]:
            on_step(step)
        if lead:
            run.log(step, lr=sched.get_last_lr()[0], **m)
            if progress:
                progress(step, m)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            if lead and evaluate is not None:
                run.log(step, **evaluate(model))
            if lead:
                run.save_state(step + 1, model=model, opt=opt, sched=sched, **extra_state)
    if world > 1:
        dist.barrier()
    return model
