"""Micro-batching for ONNX Runtime, shared by the HTTP and gRPC paths of a service.

Concurrent requests (each one or more images) are merged into one model call of up to
`max_batch_size` images; while the model is busy, a batch waits at most `max_latency_ms` after
its oldest request arrived for company (when every lane is idle it goes at once). Up to `lanes`
batches run at once, each in its own worker thread (ONNX Runtime releases the GIL); requests
arriving meanwhile form the next batches, so batches grow with load by themselves.

Why lanes: on a CPU, one session run with N intra-op threads scales worse than N single-thread
runs side by side, and a service whose intra-op threads wait for one another burns CPU that the
other services of the pipeline need. With L lanes (one intra-op thread each on a CPU), a lone
request is split into up to L slices that run in parallel — rows stay in order — and under load
every lane takes a full batch.

A batch that is all the work there is (every other lane idle, nothing left waiting) can run on
`infer_alone` instead: a session with every core, for a lone small request that cannot be split
(a single face on two cores: 5.6 → 3.3–3.6 ms through the refiner).

The queue is bounded in images: a request that would overflow it fails at once with QueueFull
(→ gRPC RESOURCE_EXHAUSTED / HTTP 503 + Retry-After) instead of growing memory without limit.
A request whose deadline passes while it waits is dropped before it reaches the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Infer = Callable[[np.ndarray], dict[str, np.ndarray]]


def request_budget(caller_s: float | None, default_s: float, max_s: float) -> float:
    """A request's time: its caller's deadline, or `default_s` when it set none; a caller's is
    honoured up to `max_s` (never below the default), so the default is no cap on a caller who
    gives more — such as the pipeline handing on what is left of a large request's deadline."""
    return min(caller_s or default_s, max(max_s, default_s))


class QueueFull(Exception):
    """Refused for now, worth sending again in `retry_after_s` (RESOURCE_EXHAUSTED / 503 + Retry-After)."""

    def __init__(self, queued: int, limit: int, retry_after_s: float, what: str = "images queued",
                 why: str = "") -> None:
        super().__init__(f"server busy: {queued} {what} (limit {limit}){why}; retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(TimeoutError):
    """The caller's deadline passed while its rows waited: the same timeout the caller's own timer
    raises, whichever of the two notices first."""


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    deadline: float | None  # time.monotonic() seconds
    arrived: float
    taken: int = 0  # rows handed to batches so far
    finished: int = 0  # rows whose outputs came back
    parts: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)  # (first row, outputs)

    @property
    def left(self) -> int:
        return len(self.x) - self.taken

    def deliver(self, start: int, rows: int, out: dict[str, np.ndarray]) -> None:
        self.parts.append((start, out))
        self.finished += rows
        if self.finished == len(self.x) and not self.future.done():
            parts = [o for _, o in sorted(self.parts, key=lambda p: p[0])]
            self.future.set_result(parts[0] if len(parts) == 1 else
                                   {k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


@dataclass
class _Slice:
    pending: _Pending
    start: int
    stop: int


class MicroBatcher:
    def __init__(
        self,
        infer: Infer,
        max_batch_size: int = 64,
        max_latency_ms: float = 2.0,
        max_queue: int = 2048,
        on_batch: Callable[[int, float], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
        lanes: int = 1,
        min_split: int = 4,
        infer_alone: Infer | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_latency_ms < 0 or lanes < 1 or min_split < 1:
            raise ValueError("max_batch_size, max_queue, lanes and min_split must be ≥ 1, max_latency_ms ≥ 0")
        self.infer = infer
        self.infer_alone = infer_alone
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self.max_queue = max_queue
        self.lanes = lanes
        self.min_split = min_split  # never split work into slices smaller than this (small runs are inefficient)
        self._on_batch = on_batch or (lambda n, s: None)
        self._on_queue = on_queue or (lambda n: None)
        self._pending: deque[_Pending] = deque()
        self._queued = 0  # rows not yet handed to a batch
        self._busy = 0  # lanes running a batch
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._executor = ThreadPoolExecutor(lanes, thread_name_prefix="ort-batch")
        self._batch_seconds = 0.01  # running estimate, for Retry-After

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running."""
        return self._queued == 0 and self._busy == 0

    async def submit(self, x: np.ndarray, deadline: float | None = None) -> dict[str, np.ndarray]:
        """Run `x` (a batch of n inputs) through the model; returns the n rows of every output."""
        n = len(x)
        if n == 0:
            return {}
        if self._queued + n > self.max_queue:
            batches_ahead = self._queued / (self.max_batch_size * self.lanes) + 1
            raise QueueFull(self._queued, self.max_queue, max(0.1, batches_ahead * self._batch_seconds))
        self._ensure_running()
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(x, fut, deadline, time.monotonic()))
        self._queued += n
        self._on_queue(self._queued)
        self._wakeup.set()
        return await fut

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def _wait(self, timeout: float | None = None) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _run(self) -> None:
        while True:
            if not self._pending or self._busy >= self.lanes:
                await self._wait()
                continue
            # Under load (a lane is busy) give concurrent requests a moment to join, counted from
            # the oldest one's arrival, unless a full batch is already waiting. With every lane idle
            # nobody is coming: waiting would only add latency to a lone request (nor does the rest
            # of a request whose first slice already runs wait).
            head = self._pending[0]
            until = head.arrived + self.max_latency
            while (self._busy and not head.taken and self._queued < self.max_batch_size
                   and time.monotonic() < until):
                await self._wait(until - time.monotonic())
            # spread what waits over the idle lanes, in slices of at least min_split rows
            idle = self.lanes - self._busy
            limit = min(self.max_batch_size, max(self.min_split, math.ceil(self._queued / idle)))
            batch = self._take(limit)
            if batch:
                alone = self.infer_alone is not None and not self._busy and not self._queued
                self._busy += 1
                task = asyncio.get_running_loop().create_task(self._execute(batch, self.infer_alone if alone else self.infer))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Slice], infer: Infer) -> None:
        try:
            xs = [s.pending.x[s.start : s.stop] for s in batch]
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            t0 = time.monotonic()
            try:
                out = await asyncio.get_running_loop().run_in_executor(self._executor, infer, x)
            except Exception as exc:  # the model failed: every request of the batch learns why
                for s in batch:
                    if not s.pending.future.done():
                        s.pending.future.set_exception(exc)
                return
            dt = time.monotonic() - t0
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * dt
            self._on_batch(len(x), dt)
            row = 0
            for s in batch:
                n = s.stop - s.start
                if not s.pending.future.done():
                    s.pending.deliver(s.start, n, {k: v[row : row + n] for k, v in out.items()})
                row += n
        finally:
            self._busy -= 1
            self._wakeup.set()

    def _take(self, limit: int) -> list[_Slice]:
        """Pop up to `limit` rows from the oldest requests (splitting the last one if needed);
        drop expired and cancelled requests."""
        batch: list[_Slice] = []
        size = 0
        now = time.monotonic()
        while self._pending and size < limit:
            p = self._pending[0]
            if p.future.done() or (p.deadline is not None and now > p.deadline):
                self._pending.popleft()
                self._queued -= p.left
                if not p.future.done():
                    p.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                continue
            n = min(p.left, limit - size)
            batch.append(_Slice(p, p.taken, p.taken + n))
            p.taken += n
            self._queued -= n
            size += n
            if p.left == 0:
                self._pending.popleft()
        self._on_queue(self._queued)
        return batch

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(RuntimeError("server shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
