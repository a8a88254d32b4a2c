"""The micro-batcher on its own: merging, splitting across lanes, order, failures, limits."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from services.core.batcher import DeadlineExceeded, MicroBatcher, QueueFull


class Recorder:
    """An `infer` that doubles its input and records every batch it ran and how many ran at once."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.delay, self.fail_on = delay, fail_on
        self.batches: list[np.ndarray] = []
        self.active = self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self.batches.append(x.copy())
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.delay)
            if self.fail_on is not None and self.fail_on in x:
                raise RuntimeError(f"model failed on {self.fail_on}")
            return {"double": 2 * x, "first": x[:, :1]}
        finally:
            with self._lock:
                self.active -= 1


def run(coro):
    return asyncio.run(coro)


def rows(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64)[:, None].repeat(3, axis=1)


def test_concurrent_requests_share_one_batch_and_get_their_own_rows():
    rec = Recorder(delay=0.01)

    async def main():
        b = MicroBatcher(rec, max_batch_size=64, max_latency_ms=20, lanes=1)
        outs = await asyncio.gather(*(b.submit(rows(10 * i, i + 1)) for i in range(4)))
        await b.close()
        return outs

    outs = run(main())
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out["double"], 2 * rows(10 * i, i + 1))
        np.testing.assert_array_equal(out["first"], rows(10 * i, i + 1)[:, :1])
    assert len(rec.batches) == 1 and len(rec.batches[0]) == 10


def test_a_lone_request_is_split_over_idle_lanes_and_comes_back_in_order():
    rec = Recorder(delay=0.05)

    async def main():
        b = MicroBatcher(rec, max_batch_size=64, max_latency_ms=0, lanes=2, min_split=4)
        out = await b.submit(rows(0, 16))
        await b.close()
        return out

    out = run(main())
    np.testing.assert_array_equal(out["double"], 2 * rows(0, 16))
    assert sorted(len(x) for x in rec.batches) == [8, 8]
    assert rec.peak == 2  # the two slices ran at the same time


def test_small_requests_are_not_split_below_min_split():
    rec = Recorder()

    async def main():
        b = MicroBatcher(rec, max_latency_ms=0, lanes=4, min_split=4)
        out = await b.submit(rows(0, 6))
        await b.close()
        return out

    np.testing.assert_array_equal(run(main())["double"], 2 * rows(0, 6))
    assert sorted(len(x) for x in rec.batches) == [2, 4]


def test_only_a_batch_that_runs_alone_goes_to_infer_alone():
    lane, alone = Recorder(delay=0.05), Recorder(delay=0.05)

    async def main():
        b = MicroBatcher(lane, max_latency_ms=0, lanes=2, min_split=4, infer_alone=alone)
        one = await b.submit(rows(0, 1))  # nothing else running or waiting
        await b.submit(rows(10, 16))  # split over both lanes: not alone
        # the first runs alone; the second arrives while it runs and takes the other lane
        first = asyncio.ensure_future(b.submit(rows(40, 1)))
        await asyncio.sleep(0.01)
        second = await b.submit(rows(50, 1))
        await first
        await b.close()
        return one, second

    one, second = run(main())
    np.testing.assert_array_equal(one["double"], 2 * rows(0, 1))
    np.testing.assert_array_equal(second["double"], 2 * rows(50, 1))
    assert [x[:, 0].tolist() for x in alone.batches] == [[0], [40]]
    assert sorted(x[0, 0] for x in lane.batches) == [10, 18, 50]


def test_under_load_batches_grow_up_to_max_batch_size():
    rec = Recorder(delay=0.02)

    async def main():
        b = MicroBatcher(rec, max_batch_size=8, max_latency_ms=1, lanes=2)
        outs = await asyncio.gather(*(b.submit(rows(i, 1)) for i in range(40)))
        await b.close()
        return outs

    outs = run(main())
    assert [int(o["double"][0, 0]) for o in outs] == [2 * i for i in range(40)]
    assert max(len(x) for x in rec.batches) == 8 and rec.peak <= 2


def test_a_failing_batch_fails_its_requests_only():
    rec = Recorder(fail_on=5)

    async def main():
        b = MicroBatcher(rec, max_latency_ms=0, lanes=1)
        with pytest.raises(RuntimeError, match="model failed on 5"):
            await b.submit(rows(0, 8))
        out = await b.submit(rows(100, 2))  # the batcher keeps serving
        await b.close()
        return out

    np.testing.assert_array_equal(run(main())["double"], 2 * rows(100, 2))


def test_queue_limit_and_deadline():
    rec = Recorder(delay=0.1)

    async def main():
        b = MicroBatcher(rec, max_batch_size=2, max_latency_ms=0, max_queue=4, lanes=1)
        first = asyncio.ensure_future(b.submit(rows(0, 2)))
        await asyncio.sleep(0.01)  # running now; the queue is empty again
        late = asyncio.ensure_future(b.submit(rows(10, 2), deadline=time.monotonic() + 0.02))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="images queued"):
            await b.submit(rows(20, 3))
        with pytest.raises(DeadlineExceeded):
            await late
        await first
        await b.close()

    run(main())
    assert all(10 not in x for x in rec.batches)  # the expired request never reached the model


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(lambda x: {}, lanes=0)


def test_a_model_without_outputs_still_answers_every_slice():
    async def main():
        b = MicroBatcher(lambda x: {}, max_latency_ms=0, lanes=2, min_split=2)
        out = await asyncio.wait_for(b.submit(rows(0, 8)), 5)
        await b.close()
        return out

    assert run(main()) == {}
