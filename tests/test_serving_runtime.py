"""The serving core's model wrapper on real exports: the all-cores session for lone batches."""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
import pytest

from services.core import runtime
from services.core.runtime import LONE_TRIAL_RUNS, ImageModel, ServingConfig
from services.sampler.model import SamplerModel

CPU = {"device": "cpu", "lanes": 2, "intra_op_threads": 1}


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch):
    """The lone-batch choices below are about the model, not about what else this machine runs."""
    monkeypatch.setattr(runtime, "others_runnable", lambda: 0)


def test_a_forced_lone_session_gives_the_lane_session_s_results():
    refiner = ImageModel("refiner", ServingConfig(lone_threads=2, **CPU))
    assert refiner.lone_threads == 2 and refiner.batcher.infer_alone is not None
    faces = np.random.default_rng(0).integers(0, 256, (3, refiner.height, refiner.width, 3), np.uint8)
    lane = refiner._run(faces, refiner.session)["retouched"]
    lone = refiner._run(faces, refiner.lone_session)["retouched"]
    np.testing.assert_array_equal(lane, lone)  # so a face does not depend on which session ran it

    async def one_face():  # a lone request through the batcher takes the lone session
        out = await refiner.infer(faces[:1])
        await refiner.batcher.close()
        return out["retouched"]

    np.testing.assert_array_equal(asyncio.run(one_face()), lane[:1])

    sampler = SamplerModel("sampler", ServingConfig(lone_threads=2, **CPU))
    rows = sampler.rows(sampler.validate([[0.2, 0.8, 0.5, 0.5, 0.4]], 2, 0.8, 7))
    a, b = (sampler._run(rows, s)["images"] for s in (sampler.session, sampler.lone_session))
    np.testing.assert_array_equal(a, b)


def test_lone_threads_1_keeps_one_session():
    model = ImageModel("filter", ServingConfig(lone_threads=1, **CPU))
    assert model.lone_session is None and model.lone_threads == 1 and model.batcher.infer_alone is None


class _Timed(ImageModel):
    """The filter, made slower on one of its two sessions: the auto setting must follow the clock."""

    slow = "lane"  # which session sleeps

    def _run(self, x, session):
        if (session is self.session) == (self.slow == "lane"):
            time.sleep(0.002)
        return super()._run(x, session)


def _serve_alone(model: _Timed, phases: list[tuple[str, int]]) -> tuple[list[int | None], list[dict]]:
    """Single rows one at a time: for each phase, `slow` set and that many requests served. The
    lone batches' threads after each phase, and every answer."""
    async def one_at_a_time():
        x = np.full((1, model.height, model.width, 3), 100, np.uint8)
        threads, outs = [], []
        for slow, n in phases:
            model.slow = slow
            for _ in range(n):
                outs.append(await model.infer(x))
            threads.append(model.lone_threads)
        await model.batcher.close()
        return threads, outs

    return asyncio.run(one_at_a_time())


@pytest.mark.parametrize(("slow", "kept"), [("lane", True), ("lone", False)])
def test_auto_keeps_the_lone_session_only_where_lone_rows_ran_faster(slow, kept):
    model = _Timed("filter", ServingConfig(**CPU))
    assert model.lone_threads is None  # measuring
    _, outs = _serve_alone(model, [(slow, 2 * LONE_TRIAL_RUNS + 2)])
    assert all(np.array_equal(o["p_female"], outs[0]["p_female"]) for o in outs)
    assert model.lone_threads == (2 if kept else 1)


def test_a_lost_trial_is_run_again_and_a_won_retrial_keeps_the_lone_session(monkeypatch):
    """A neighbour busy during the first trial must not cost the service its fast lone batches
    for good: the lone session that lost is timed again later, and kept when it wins then."""
    monkeypatch.setattr(runtime, "LONE_RETRIAL_AFTER", 3)
    model = _Timed("filter", ServingConfig(**CPU))
    trial = 2 * LONE_TRIAL_RUNS
    # the equality check and the trial lost; the wait before the retrial; the retrial won
    assert _serve_alone(model, [("lone", 1 + trial), ("lane", 2), ("lane", 1 + trial)])[0] == [1, 1, 2]
    assert model.lone_session is not None


def test_a_lone_session_that_loses_every_retrial_is_dropped(monkeypatch):
    monkeypatch.setattr(runtime, "LONE_RETRIAL_AFTER", 2)
    model = _Timed("filter", ServingConfig(**CPU))
    trials = 1 + runtime.LONE_RETRIALS
    _serve_alone(model, [("lone", 1 + trials * 2 * LONE_TRIAL_RUNS + runtime.LONE_RETRIALS * 2)])
    assert model.lone_session is None and model.lone_threads == 1


class _Disagreeing(ImageModel):
    """The filter, with a lone session whose answers differ in the last bit (as a graph whose float
    sums depend on the thread count does)."""

    def _run(self, x, session):
        out = super()._run(x, session)
        if session is self.lone_session:
            return {k: np.nextafter(v, np.inf) for k, v in out.items()}
        return out


def test_a_lone_session_that_answers_otherwise_is_dropped_at_its_first_batch():
    """The same request must give the same answer however busy the service is: the first lone
    batch runs on both sessions, and a difference keeps the lanes only."""
    model = _Disagreeing("filter", ServingConfig(**CPU))
    assert model.lone_session is not None
    faces = np.random.default_rng(0).integers(0, 256, (1, model.height, model.width, 3), np.uint8)
    lane = ImageModel._run(model, faces, model.session)
    out = model._run_alone(faces)
    assert model.lone_session is None and model.lone_threads == model._lane_threads
    assert all(np.array_equal(out[k], lane[k]) for k in lane)


class _DisagreeingAtTwo(_Disagreeing):
    """A lone session that agrees on one row and differs on two (as the tests' tiny generator does
    at batch 2 on two threads)."""

    def _run(self, x, session):
        return super()._run(x, session) if len(x) == 2 else ImageModel._run(self, x, session)


@pytest.mark.parametrize("lone_threads", [0, 2])
def test_every_batch_size_is_compared_before_the_lone_session_runs_it(lone_threads):
    """One size agreeing says nothing of another; an explicit FACEGEN_LONE_THREADS is held to the
    same rule as the auto setting."""
    model = _DisagreeingAtTwo("filter", ServingConfig(lone_threads=lone_threads, **CPU))
    faces = np.random.default_rng(0).integers(0, 256, (2, model.height, model.width, 3), np.uint8)
    model._run_alone(faces[:1])
    assert model.lone_session is not None and model._agreed == {1}
    lane = ImageModel._run(model, faces, model.session)
    out = model._run_alone(faces)
    assert model.lone_session is None and all(np.array_equal(out[k], lane[k]) for k in lane)


@pytest.mark.parametrize("name", ["refiner", "sampler"])
def test_a_session_that_skipped_its_shrink_settles_it_once_idle(monkeypatch, name):
    """Batches inside the shrink rate limit leave their session owing a shrink; once the model is
    idle for the limit, each owing session runs its smallest input with the shrinking options."""
    from services.core import runtime

    # the settle timer starts at the first run: the interval must outlast the four runs on a slow,
    # shared VM (the refined sampler's first runs at a new size take most of a second each)
    monkeypatch.setattr(runtime, "SHRINK_EVERY_S", 3.0)
    model = (SamplerModel if name == "sampler" else ImageModel)(name, ServingConfig(lone_threads=2, **CPU))
    if name == "sampler":
        x = model.rows(model.validate([[0.2, 0.8, 0.5, 0.5, 0.4]], 3, 0.8, 7))
    else:
        x = np.random.default_rng(0).integers(0, 256, (3, model.height, model.width, 3), np.uint8)
    shrinking = []
    real_run = runtime.BatchedModel.run_options

    def spy(self, session):
        opts = real_run(self, session)
        shrinking.append(opts is not None)
        return opts

    monkeypatch.setattr(runtime.BatchedModel, "run_options", spy)
    for session in (model.session, model.session, model.lone_session, model.lone_session):
        model._run(x, session)
    ran = time.monotonic()
    assert shrinking == [True, False, True, False]  # one shrink per session per interval
    assert set(model._owed) == {id(model.session), id(model.lone_session)}

    def settled() -> bool:  # the settle empties the debts first, then shrinks each owing session
        return (not model._owed and model._settle_timer is None
                and all(model._shrunk_at[id(s)] > ran for s in (model.session, model.lone_session)))

    deadline = time.monotonic() + 10
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert settled()


def test_without_the_arena_batches_never_shrink_but_the_model_still_settles(monkeypatch):
    from services.core import runtime

    monkeypatch.setattr(runtime, "SHRINK_EVERY_S", 0.2)
    trimmed = []
    monkeypatch.setattr(runtime, "release_free_heap", lambda: trimmed.append(1))
    model = ImageModel("critic", ServingConfig(cpu_arena=0, **CPU))
    x = np.zeros((2, model.height, model.width, 3), np.uint8)
    assert model.run_options(model.session) is None and model._settle_timer is not None
    model._run(x, model.session)
    assert not model._owed  # no arena: nothing to shrink
    deadline = time.monotonic() + 5  # (another test's model may settle meanwhile: wait for this one's timer)
    while (not trimmed or model._settle_timer is not None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert trimmed and model._settle_timer is None


@pytest.mark.parametrize(("spin", "entries"), [
    ("run", {"session.force_spinning_stop": "1"}),  # spins between a run's operators, stops at its end
    ("never", {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}),
    ("always", {"session.force_spinning_stop": None, "session.intra_op.allow_spinning": None}),  # ORT's defaults
])
def test_the_spin_setting_reaches_the_session(spin, entries):
    model = ImageModel("filter", ServingConfig(ort_spin=spin, lone_threads=2, **CPU))
    options = model.lone_session.get_session_options()

    def entry(key: str) -> str | None:
        try:
            return options.get_session_config_entry(key)
        except RuntimeError:  # not set
            return None

    assert {k: entry(k) for k in entries} == entries


def test_an_unknown_spin_setting_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="spin must be one of run, never, always, got 'fast'"):
        ImageModel("filter", ServingConfig(ort_spin="fast", **CPU))


class _Recording(ImageModel):
    def _run(self, x, session):
        self.ran_on.append("lone" if session is self.lone_session else "lane")
        return super()._run(x, session)


def test_a_lone_batch_that_finds_the_cores_taken_runs_on_its_lane(monkeypatch):
    """Two more threads beside another service's batch only contend with it."""
    model = _Recording("filter", ServingConfig(lone_threads=2, **CPU))
    model.ran_on = []
    x = np.full((1, model.height, model.width, 3), 100, np.uint8)
    model._run_alone(x)  # the first lone batch of a size runs on both (the equality check)
    model.ran_on.clear()
    model._run_alone(x)
    monkeypatch.setattr(runtime, "others_runnable", lambda: 2)  # two other tasks runnable: both cores taken
    model._run_alone(x)
    monkeypatch.setattr(runtime, "others_runnable", lambda: 1)  # this process's event loop, say
    model._run_alone(x)
    monkeypatch.setattr(runtime, "others_runnable", lambda: None)  # not known (no /proc)
    model._run_alone(x)
    assert model.ran_on == ["lone", "lane", "lone", "lone"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/loadavg")
def test_others_runnable_counts_what_runs_besides_the_caller(monkeypatch):
    monkeypatch.undo()  # the real reading, not the fixture's idle machine
    n = runtime.others_runnable()
    assert isinstance(n, int) and n >= 0  # the running count includes the caller itself


def test_a_callers_longer_deadline_is_honoured_up_to_the_cap():
    """The default time (for callers without a deadline) is not a cap on a caller who gives more,
    such as the pipeline handing on what is left of a large request's deadline; the cap is."""
    model = SamplerModel("sampler", ServingConfig(timeout_s=0.001, max_timeout_s=60.0, **CPU))
    x = model.rows(model.validate([[0.2, 0.8, 0.5, 0.5, 0.4]], 2, 0.8, 7))

    async def run(timeout_s):
        return (await model.submit(x, timeout_s))["images"]

    assert asyncio.run(run(30.0)).shape == (2, 64, 64, 3)
    with pytest.raises(TimeoutError):
        asyncio.run(run(None))  # no deadline: the default
    capped = SamplerModel("sampler", ServingConfig(timeout_s=0.001, max_timeout_s=0.001, **CPU))
    with pytest.raises(TimeoutError):
        asyncio.run(capped.submit(x, 30.0))
