"""Throughput timing shared by the benchmark scripts (run from the repository root)."""

from __future__ import annotations

import time
from collections.abc import Callable


def rate(fn: Callable[[], object], batch: int, seconds: float = 3.0) -> float:
    """Items per second of `fn` processing `batch` items per call (one warm-up call first)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - t0)
