"""Micro-batching for ONNX Runtime, shared by the HTTP and gRPC paths of a service.

Concurrent requests (each one or more images) are merged into one model call of up to
`max_batch_size` images, waiting at most `max_latency_ms` after the first request for company.
One batch runs at a time in a worker thread (ONNX Runtime releases the GIL and uses its own
intra-op threads), and requests arriving meanwhile form the next batch — so batches grow with
load by themselves.

The queue is bounded in images: a request that would overflow it fails at once with QueueFull
(→ gRPC RESOURCE_EXHAUSTED / HTTP 503 + Retry-After) instead of growing memory without limit.
A request whose deadline passes while it waits is dropped before it reaches the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

Infer = Callable[[np.ndarray], dict[str, np.ndarray]]


class QueueFull(Exception):
    def __init__(self, queued: int, limit: int, retry_after_s: float) -> None:
        super().__init__(f"server busy: {queued} images queued (limit {limit}); retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Exception):
    pass


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    deadline: float | None  # time.monotonic() seconds


class MicroBatcher:
    def __init__(
        self,
        infer: Infer,
        max_batch_size: int = 64,
        max_latency_ms: float = 2.0,
        max_queue: int = 2048,
        on_batch: Callable[[int, float], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_latency_ms < 0:
            raise ValueError("max_batch_size and max_queue must be ≥ 1, max_latency_ms ≥ 0")
        self.infer = infer
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda n, s: None)
        self._on_queue = on_queue or (lambda n: None)
        self._pending: deque[_Pending] = deque()
        self._queued = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ort-batch")
        self._batch_seconds = 0.01  # running estimate, for Retry-After

    @property
    def queued(self) -> int:
        return self._queued

    async def submit(self, x: np.ndarray, deadline: float | None = None) -> dict[str, np.ndarray]:
        """Run `x` (a batch of n inputs) through the model; returns the n rows of every output."""
        n = len(x)
        if n == 0:
            return {}
        if self._queued + n > self.max_queue:
            batches_ahead = self._queued / self.max_batch_size + 1
            raise QueueFull(self._queued, self.max_queue, max(0.1, batches_ahead * self._batch_seconds))
        self._ensure_running()
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(x, fut, deadline))
        self._queued += n
        self._on_queue(self._queued)
        self._wakeup.set()
        return await fut

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            first_at = time.monotonic()
            # give concurrent requests a moment to join, unless the batch is already full
            while self._count_ready() < self.max_batch_size and time.monotonic() - first_at < self.max_latency:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self.max_latency - (time.monotonic() - first_at))
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
            t0 = time.monotonic()
            try:
                out = await loop.run_in_executor(self._executor, self.infer, x)
            except Exception as exc:  # the model failed: every request of the batch learns why
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            dt = time.monotonic() - t0
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * dt
            self._on_batch(len(x), dt)
            start = 0
            for p in batch:
                n = len(p.x)
                if not p.future.done():
                    p.future.set_result({k: v[start : start + n] for k, v in out.items()})
                start += n

    def _count_ready(self) -> int:
        return sum(len(p.x) for p in self._pending)

    def _take(self) -> list[_Pending]:
        """Pop requests up to max_batch_size images (at least one); drop expired/cancelled ones."""
        batch: list[_Pending] = []
        size = 0
        now = time.monotonic()
        while self._pending:
            p = self._pending[0]
            if batch and size + len(p.x) > self.max_batch_size:
                break
            self._pending.popleft()
            self._queued -= len(p.x)
            if p.future.done():  # cancelled by its caller
                continue
            if p.deadline is not None and now > p.deadline:
                p.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                continue
            batch.append(p)
            size += len(p.x)
        self._on_queue(self._queued)
        return batch

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(RuntimeError("server shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
