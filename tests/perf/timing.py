"""Throughput timing shared by the benchmark scripts (run from the repository root)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable


def rate_and_cpu(fn: Callable[[], object], batch: int, seconds: float = 3.0) -> tuple[float, float]:
    """Items per second of `fn` processing `batch` items per call (one warm-up call first), and
    this process's CPU time per item in ms (every thread, e.g. ONNX Runtime's)."""
    fn()
    n, t0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - t0), 1000 * (time.process_time() - cpu0) / max(n, 1)


def rate(fn: Callable[[], object], batch: int, seconds: float = 3.0) -> float:
    """Items per second of `fn` processing `batch` items per call (one warm-up call first)."""
    return rate_and_cpu(fn, batch, seconds)[0]


def median_ms(fn: Callable[[], object], calls: int, warmup: int = 20) -> float:
    """Median latency (ms) of `fn` over `calls` calls, one at a time, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


async def amedian_ms(call: Callable[[], Awaitable[object]], calls: int, warmup: int = 20) -> float:
    """median_ms for an async call."""
    for _ in range(warmup):
        await call()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


async def closed_loop(send: Callable[[int, int], Awaitable[bool]], concurrency: int,
                      seconds: float) -> tuple[list[float], int]:
    """`concurrency` clients, each sending its next request as soon as the last one answered,
    for `seconds`. `send(worker, k)` sends that worker's k-th request and says whether it
    succeeded. Returns the latencies (s) of the successful requests and the number that failed."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        k = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            if await send(w, k):
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1
            k += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies, errors
