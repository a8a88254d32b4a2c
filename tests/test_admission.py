"""The pipeline's admission control (services/pipeline/admission.py) and its all-or-none fan-out."""

from __future__ import annotations

import asyncio

import pytest

from services.core.batcher import QueueFull
from services.core.errors import BadRequest
from services.pipeline.admission import Admission, AdmissionConfig
from services.pipeline.generate import _all_or_none


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _run(adm: Admission, clock: Clock, candidates: int, seconds: float, timeout: float = 30.0) -> None:
    with adm.admit(candidates, timeout):
        clock.t += seconds


def test_no_rate_is_trusted_before_warmup_and_then_it_is_measured_on_busy_time():
    clock = Clock()
    adm = Admission(AdmissionConfig(warmup=100), clock)
    adm.check(10_000 - 1, 0.001)  # nothing measured: only the backlog cap applies (none in flight)
    for _ in range(5):
        _run(adm, clock, 20, 0.2)  # 100 faces/s
        clock.t += 10  # idle time between requests does not count
    assert adm.finished == 100 and adm.rate == pytest.approx(100.0)
    with pytest.raises(BadRequest, match=r"need about 20 s .* 100 faces/s, more than the request's 10 s"):
        adm.check(2000, 10.0)
    adm.check(500, 10.0)


def test_the_best_recent_rate_counts_and_fades():
    clock = Clock()
    adm = Admission(AdmissionConfig(warmup=1, half_life_s=60), clock)
    _run(adm, clock, 100, 1.0)  # 100/s under load
    _run(adm, clock, 1, 0.1)  # one face alone: 10/s measures latency, not capacity
    assert adm.rate == pytest.approx(100.0, rel=0.01)
    clock.t += 600
    _run(adm, clock, 10, 0.5)  # ten half-lives later the old peak has faded below 20/s
    assert adm.rate == pytest.approx(20.0)


def test_a_request_that_fits_alone_but_not_behind_the_backlog_is_told_to_retry():
    clock = Clock()
    adm = Admission(AdmissionConfig(warmup=1), clock)
    _run(adm, clock, 100, 1.0)
    with adm.admit(800, 30.0):  # 8 s of work in flight
        with pytest.raises(QueueFull) as err:
            adm.check(300, 10.0)  # 3 s alone, 11 s behind the 8 s backlog
        assert err.value.retry_after_s == pytest.approx(8.0) and "retry in 8.0 s" in str(err.value)
        adm.check(100, 12.0)  # 9 s, within 0.8 of 12: admitted
        with pytest.raises(QueueFull):
            adm.check(100, 10.0)  # 9 s of 10: beyond the headroom
    assert adm.in_flight == 0


def test_the_backlog_cap_and_a_failed_request_releases_its_share_without_counting_as_work():
    clock = Clock()
    adm = Admission(AdmissionConfig(max_candidates=100, warmup=10**9), clock)
    with adm.admit(60, 30.0):
        with pytest.raises(QueueFull, match="60 candidates in flight"):
            adm.check(41, 30.0)
        adm.check(40, 30.0)
    with pytest.raises(RuntimeError), adm.admit(60, 30.0):
        raise RuntimeError("upstream failed")
    assert adm.in_flight == 0 and adm.finished == 60


def test_one_failing_part_cancels_the_others():
    """A request split over several upstream calls: when one fails, the rest stop (was: they kept
    the sampler busy after the caller had its error)."""
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def fails():
        await asyncio.sleep(0.01)
        raise ValueError("sampler busy")

    async def main():
        with pytest.raises(ValueError, match="sampler busy"):
            await _all_or_none([slow(), fails(), slow()])

    asyncio.run(asyncio.wait_for(main(), 2))
    assert cancelled == [True, True]
