"""The pipeline's Coalescer: concurrent small upstream calls share one call, and each caller gets
its own rows, its own deadline and its own errors."""

from __future__ import annotations

import asyncio

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


def after_one_in_flight(up: FakeUpstream, calls: list[tuple[list, float]], **kw) -> tuple[list, list]:
    """Call [1] and, while it is out, `calls` (items, timeout) in order: (its rows, theirs),
    exceptions in place of rows."""

    async def scenario():
        c = Coalescer(up, **{"max_in_flight": 1, **kw})
        first = asyncio.create_task(c([1], 5))
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(c(items, timeout)) for items, timeout in calls]
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        return results[0], results[1:]

    return asyncio.run(scenario())


def test_a_lone_call_goes_out_at_once_and_concurrent_ones_share_the_next():
    up = FakeUpstream()
    first, rest = after_one_in_flight(up, [([2], 5), ([3, 4], 5), ([5], 5)])
    assert first == [10] and rest == [[20], [30, 40], [50]]
    assert up.calls == [[1], [2, 3, 4, 5]]


def test_large_calls_go_alone_and_groups_respect_max_items():
    up = FakeUpstream()
    first, (big, *small) = after_one_in_flight(up, [([7, 7, 7, 7], 5)] + [([i], 5) for i in (2, 3, 4, 5)],
                                               max_items=3, merge_below=4)
    assert first == [10] and big == [70] * 4 and small == [[20], [30], [40], [50]]
    assert up.calls[:2] == [[1], [7, 7, 7, 7]] and up.calls[2:] == [[2, 3, 4], [5]]  # big: not queued


def test_a_bad_caller_does_not_fail_the_ones_it_shared_a_call_with():
    first, (two, three, four) = after_one_in_flight(FakeUpstream(bad=3), [([i], 5) for i in (2, 3, 4)])
    assert first == [10] and two == [20] and four == [40]
    assert isinstance(three, BadRequest) and "bad item 3" in str(three)


def test_an_unavailable_upstream_fails_every_caller_of_the_group():
    first, rest = after_one_in_flight(FakeUpstream(down=True), [([2], 5), ([3], 5)])
    assert all(isinstance(r, UpstreamUnavailable) for r in (first, *rest))


def test_a_waiting_caller_keeps_its_own_deadline_and_is_left_out_after_it():
    up = FakeUpstream(delay=0.3)
    first, (hurried, patient) = after_one_in_flight(up, [([2], 0.05), ([3], 5)])  # [2] gives up while [1] is out
    assert first == [10] and isinstance(hurried, TimeoutError) and patient == [30]
    assert up.calls == [[1], [3]]
