"""Merging concurrent upstream calls of one kind into one call.

Under load, every Generate request of a single face makes its own Retouch, Infer and Classify
call, and each gRPC call costs about a millisecond of CPU between the pipeline and the service
(tests/perf/single_face_hops.py) — as much as the attribute model itself. A Coalescer sends a
call at once while fewer than `max_in_flight` of its kind are out (a lone request waits for
nothing); calls that arrive while they are all out wait for one to return and then go out as one
call, their images concatenated, each caller getting back its own rows.

Measured (tests/perf/bench_pipeline.py, single faces, 32 in flight): 100 → 114–118 faces/s over
gRPC, 90 → 101–114 over HTTP, the services' CPU per face 19.3 → 15.8–16.9 ms; with 1 or 8 in
flight no change (calls of a kind rarely overlap there). Calls of `merge_below` images or more
go out alone, uncounted: 16-face requests gain nothing from sharing, and measured 3–7 % slower
when made to queue behind one another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from services.core.errors import BadRequest

# send(images, timeout_s) → one result row per image
Send = Callable[[Sequence, float], Awaitable[Sequence]]


@dataclass
class _Waiting:
    items: Sequence
    deadline: float
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Coalescer:
    def __init__(self, send: Send, max_in_flight: int = 1, max_items: int = 64, merge_below: int = 4) -> None:
        self.send, self.max_in_flight, self.max_items, self.merge_below = send, max_in_flight, max_items, merge_below
        self._in_flight = 0
        self._waiting: list[_Waiting] = []

    async def __call__(self, items: Sequence, timeout_s: float) -> list:
        if len(items) >= self.merge_below:
            return list(await self.send(items, timeout_s))
        if self._in_flight < self.max_in_flight and not self._waiting:
            self._in_flight += 1
            try:
                return list(await self.send(items, timeout_s))
            finally:
                self._in_flight -= 1
                self._next()
        w = _Waiting(items, time.monotonic() + timeout_s)
        self._waiting.append(w)
        # the caller's own deadline holds whatever the merged call does; on timeout its future is
        # cancelled, so a later group leaves it out
        return await asyncio.wait_for(w.future, timeout_s)

    def _next(self) -> None:
        """A call came back: send what waited, as one call (or as many as max_items needs)."""
        if not self._waiting or self._in_flight >= self.max_in_flight:
            return
        group, size = [], 0
        while self._waiting and (not group or size + len(self._waiting[0].items) <= self.max_items):
            w = self._waiting.pop(0)
            if not w.future.done():  # a caller whose deadline passed has gone
                group.append(w)
                size += len(w.items)
        if group:
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._send_group(group))

    async def _send_group(self, group: list[_Waiting]) -> None:
        try:
            items = [x for w in group for x in w.items]
            timeout = max(w.deadline for w in group) - time.monotonic()
            try:
                out = list(await self.send(items, max(timeout, 0.001)))
            except BadRequest:
                if len(group) == 1:
                    raise
                # one caller's bad input must not fail the others: each goes alone
                for w in group:
                    try:
                        result = list(await self.send(w.items, max(w.deadline - time.monotonic(), 0.001)))
                    except Exception as exc:  # noqa: BLE001 — handed to that caller
                        _fail(w, exc)
                    else:
                        _deliver(w, result)
                return
            start = 0
            for w in group:
                _deliver(w, out[start : start + len(w.items)])
                start += len(w.items)
        except Exception as exc:  # noqa: BLE001 — every caller of the group learns why
            for w in group:
                _fail(w, exc)
        finally:
            self._in_flight -= 1
            self._next()


def _deliver(w: _Waiting, rows: list) -> None:
    if not w.future.done():
        w.future.set_result(rows)


def _fail(w: _Waiting, exc: BaseException) -> None:
    if not w.future.done():
        w.future.set_exception(exc)
