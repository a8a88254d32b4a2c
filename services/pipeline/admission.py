"""Admission control for the pipeline: refuse at once what cannot finish in time, instead of
starting work that dies at its deadline and slows everything behind it.

The pipeline's capacity is measured, not configured: candidates finished per second of busy time
(time with at least one request in flight), so concurrent requests do not read as a slow
pipeline; the best rate seen recently (a maximum that halves every `half_life_s`), because one
face at a time measures latency, not capacity, and refusing work the pipeline could have done is
worse than admitting a request that then runs late. A request of n candidates arriving behind a
backlog of b is expected to finish in (b + n) / rate seconds. It is
- refused as too big (INVALID_ARGUMENT / 400) when n / rate alone exceeds its deadline: no retry
  can help, the caller must ask for less or allow more time;
- refused as busy (RESOURCE_EXHAUSTED / 503 + Retry-After ≈ the backlog's drain time) when it
  would fit alone but not behind the backlog (within `headroom` of its deadline), or when the
  backlog already holds `max_candidates`;
- admitted otherwise. Until `warmup` candidates have finished there is no rate to trust, and
  only the backlog cap applies.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from services.core import metrics
from services.core.batcher import QueueFull
from services.core.errors import BadRequest


@dataclass(frozen=True)
class AdmissionConfig:
    max_candidates: int = 2048  # candidates in flight at most: one largest request (the model services queue 2048 images)
    # a request is admitted behind the backlog only if it is expected to finish within this share of
    # its deadline: the rate is the best recently seen, and a burst arrives before the backlog it makes
    headroom: float = 0.8
    warmup: int = 64  # candidates finished before the measured rate is trusted
    half_life_s: float = 120.0  # how fast a rate seen once is forgotten


class Admission:
    def __init__(self, cfg: AdmissionConfig = AdmissionConfig(), clock=time.monotonic) -> None:
        self.cfg, self.clock = cfg, clock
        self.in_flight = 0  # candidates admitted and not finished
        self.rate: float | None = None  # candidates per busy second, once measured
        self.finished = 0
        self._busy_since: float | None = None
        self._busy_done = 0  # candidates finished in the current busy period
        self._rate_at = 0.0  # when the rate was last raised or decayed

    def _expected_s(self, candidates: int) -> float | None:
        if self.rate is None or self.finished < self.cfg.warmup:
            return None
        return candidates / self.rate

    def check(self, candidates: int, timeout_s: float) -> None:
        if self.in_flight and self.in_flight + candidates > self.cfg.max_candidates:
            raise QueueFull(self.in_flight, self.cfg.max_candidates,
                            self._expected_s(self.in_flight) or 1.0, "candidates in flight")
        alone = self._expected_s(candidates)
        if alone is None:
            return
        if alone > timeout_s:
            raise BadRequest(f"{candidates} candidates need about {alone:.0f} s at this pipeline's measured "
                             f"{self.rate:.0f} faces/s, more than the request's {timeout_s:.0f} s: ask for fewer "
                             "faces or less oversampling, or allow a longer deadline")
        behind = self._expected_s(self.in_flight + candidates)
        if behind is not None and behind > self.cfg.headroom * timeout_s:
            raise QueueFull(self.in_flight, self.cfg.max_candidates, max(behind - alone, 0.1), "candidates in flight",
                            f": behind them this request would finish in about {behind:.1f} s, after its "
                            f"{timeout_s:.1f} s deadline")

    @contextmanager
    def admit(self, candidates: int, timeout_s: float):
        """Hold `candidates` of the pipeline's capacity while the block runs (refusing first, see
        the module's docstring); a block that fails counts as no finished work."""
        self.check(candidates, timeout_s)
        if self.in_flight == 0:
            self._busy_since, self._busy_done = self.clock(), 0
        self.in_flight += candidates
        metrics.IN_FLIGHT_CANDIDATES.set(self.in_flight)
        ok = False
        try:
            yield
            ok = True
        finally:
            self.in_flight -= candidates
            metrics.IN_FLIGHT_CANDIDATES.set(self.in_flight)
            if ok:
                self._done(candidates)
            if self.in_flight == 0:
                self._busy_since = None

    def _done(self, candidates: int) -> None:
        self.finished += candidates
        self._busy_done += candidates
        now = self.clock()
        busy = 0.0 if self._busy_since is None else now - self._busy_since
        if busy <= 0:
            return
        current = self._busy_done / busy
        decayed = 0.0 if self.rate is None else self.rate * 0.5 ** ((now - self._rate_at) / self.cfg.half_life_s)
        self.rate, self._rate_at = max(current, decayed), now
