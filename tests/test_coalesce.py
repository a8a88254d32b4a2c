"""The pipeline's Coalescer: concurrent small upstream calls share one call, and each caller gets
its own rows, its own deadline and its own errors."""

from __future__ import annotations

import asyncio

import pytest

from services.core.errors import BadRequest, UpstreamUnavailable
from services.pipeline.coalesce import Coalescer


class FakeUpstream:
    """Answers each item with item * 10 after `delay`; records every call it gets."""

    def __init__(self, delay: float = 0.05, bad: object = None, down: bool = False) -> None:
        self.calls: list[list] = []
        self.delay, self.bad, self.down = delay, bad, down

    async def __call__(self, items, timeout_s: float) -> list:
        self.calls.append(list(items))
        await asyncio.sleep(self.delay)
        if self.down:
            raise UpstreamUnavailable("critic", "UNAVAILABLE")
        if self.bad in items:
            raise BadRequest(f"bad item {self.bad}")
        return [x * 10 for x in items]


def run(coro):
    return asyncio.run(coro)


def test_a_lone_call_goes_out_at_once_and_concurrent_ones_share_the_next():
    async def scenario():
        up = FakeUpstream()
        c = Coalescer(up, max_in_flight=1)
        first = asyncio.create_task(c([1], 5))
        await asyncio.sleep(0.01)  # the first is in flight: the next three wait for it
        rest = [asyncio.create_task(c(items, 5)) for items in ([2], [3, 4], [5])]
        return up, await first, await asyncio.gather(*rest)

    up, first, rest = run(scenario())
    assert first == [10] and rest == [[20], [30, 40], [50]]
    assert up.calls == [[1], [2, 3, 4, 5]]


def test_large_calls_go_alone_and_groups_respect_max_items():
    async def scenario():
        up = FakeUpstream()
        c = Coalescer(up, max_in_flight=1, max_items=3, merge_below=4)
        first = asyncio.create_task(c([1], 5))
        await asyncio.sleep(0.01)
        big = asyncio.create_task(c([7, 7, 7, 7], 5))  # not queued behind the first
        small = [asyncio.create_task(c([i], 5)) for i in (2, 3, 4, 5)]
        return up, await first, await big, await asyncio.gather(*small)

    up, first, big, small = run(scenario())
    assert big == [70] * 4 and small == [[20], [30], [40], [50]]
    assert up.calls[:2] == [[1], [7, 7, 7, 7]] and up.calls[2:] == [[2, 3, 4], [5]]


def test_a_bad_caller_does_not_fail_the_ones_it_shared_a_call_with():
    async def scenario():
        up = FakeUpstream(bad=3)
        c = Coalescer(up, max_in_flight=1)
        first = asyncio.create_task(c([1], 5))
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(c([i], 5)) for i in (2, 3, 4)]
        return await first, await asyncio.gather(*rest, return_exceptions=True)

    first, (two, three, four) = run(scenario())
    assert first == [10] and two == [20] and four == [40]
    assert isinstance(three, BadRequest) and "bad item 3" in str(three)


def test_an_unavailable_upstream_fails_every_caller_of_the_group():
    async def scenario():
        up = FakeUpstream(down=True)
        c = Coalescer(up, max_in_flight=1)
        calls = [asyncio.create_task(c([i], 5)) for i in (1, 2, 3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(r, UpstreamUnavailable) for r in run(scenario()))


def test_a_waiting_caller_keeps_its_own_deadline_and_is_left_out_after_it():
    async def scenario():
        up = FakeUpstream(delay=0.3)
        c = Coalescer(up, max_in_flight=1)
        first = asyncio.create_task(c([1], 5))
        await asyncio.sleep(0.01)
        hurried = asyncio.create_task(c([2], 0.05))  # gives up while the first is out
        patient = asyncio.create_task(c([3], 5))
        with pytest.raises(TimeoutError):
            await hurried
        return up, await first, await patient

    up, first, patient = run(scenario())
    assert first == [10] and patient == [30] and up.calls == [[1], [3]]
