"""One generation request: resolve the conditions of every candidate, run the chain
(sampler → critic retouch → attribute and filter checks) over gRPC, keep the best faces.

Candidate j (0 ≤ j < oversample·count) is drawn by the sampler with seed `seed + j`; its
requested conditions come from `numpy.random.default_rng([seed, j])` (uniform within a range,
or in [0, 1] when a condition is left open), so the same request always yields the same faces.
With oversample k, face i is the best of candidates i·k … i·k + k − 1 by the rule in
services/shared/ranking.py (the one the generator benchmark judges).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from services.core import metrics
from services.core.batcher import request_budget
from services.core.errors import BadRequest, UpstreamUnavailable
from services.pipeline.admission import Admission
from services.pipeline.upstream import Realness, Upstreams
from services.shared import ranking
from services.shared.conditions import CONDITIONS
from services.shared.sampling import DEFAULT_TEMPERATURE, MAX_TEMPERATURE

Encode = Callable[[list[np.ndarray]], Awaitable[list[bytes]]]  # final images → what the caller receives


@dataclass(frozen=True)
class GenerateSpec:
    requested: dict[str, float | tuple[float, float] | None]  # value, (min, max), or None = [0, 1]
    count: int
    temperature: float
    seed: int
    retouch: bool
    oversample: int
    allow_partial: bool

    @property
    def candidates(self) -> int:
        return self.count * self.oversample


def validate(requested: dict, count: int, temperature: float | None, seed: int, retouch: bool | None,
             oversample: int, allow_partial: bool, max_faces: int, max_oversample: int) -> GenerateSpec:
    count, oversample = count or 1, oversample or ranking.DEFAULT_OVERSAMPLE
    if not 1 <= count <= max_faces:
        raise BadRequest(f"count must be in [1, {max_faces}], got {count}")
    if not 1 <= oversample <= max_oversample:
        raise BadRequest(f"oversample must be in [1, {max_oversample}], got {oversample}")
    temperature = DEFAULT_TEMPERATURE if temperature is None else float(temperature)
    if not (math.isfinite(temperature) and 0.0 <= temperature <= MAX_TEMPERATURE):
        raise BadRequest(f"temperature must be in [0, {MAX_TEMPERATURE:g}], got {temperature}")
    if not 0 <= seed < 2**63:
        raise BadRequest("seed must be in [0, 2^63)")
    unknown = set(requested) - set(CONDITIONS)
    if unknown:
        raise BadRequest(f"unknown condition(s) {', '.join(sorted(unknown))}; known: {', '.join(CONDITIONS)}")
    for name, want in requested.items():
        values = want if isinstance(want, tuple) else () if want is None else (want,)
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise BadRequest(f"{name} must be in [0, 1], got {want}")
        if isinstance(want, tuple) and want[0] > want[1]:
            raise BadRequest(f"{name}: range min {want[0]} is above max {want[1]}")
    # the proto carries these as float32; HTTP's JSON numbers are rounded the same way, so a request
    # draws the same conditions (and faces) whichever transport it came by
    requested = {name: _as_wire(want) for name, want in requested.items()}
    temperature = _as_wire(temperature)
    return GenerateSpec({c: requested.get(c) for c in CONDITIONS}, count, temperature, seed,
                        True if retouch is None else bool(retouch), oversample, bool(allow_partial))


def _as_wire(want):
    """A number, a (min, max) pair or None at the wire schema's precision (float32)."""
    if want is None:
        return None
    if isinstance(want, tuple):
        return tuple(float(np.float32(v)) for v in want)
    return float(np.float32(want))


def requested_conditions(spec: GenerateSpec, candidates: range) -> np.ndarray:
    out = np.empty((len(candidates), len(CONDITIONS)), np.float32)
    for row, j in enumerate(candidates):
        rng = np.random.default_rng([spec.seed, j])
        u = rng.random(len(CONDITIONS))  # drawn for every condition, so each keeps its own stream
        for k, name in enumerate(CONDITIONS):
            want = spec.requested[name]
            lo, hi = want if isinstance(want, tuple) else (0.0, 1.0) if want is None else (want, want)
            out[row, k] = lo + (hi - lo) * u[k]
    return out


@dataclass
class Face:
    candidate: int
    seed: int
    image: np.ndarray
    requested: np.ndarray
    measured: np.ndarray | None = None
    before: Realness | None = None
    after: Realness | None = None
    p_female: float | None = None
    retouched: bool = False
    missing: list[str] = field(default_factory=list)
    encoded: bytes | None = None  # the image as sent (PNG), once encoded

    @property
    def condition_error(self) -> float | None:
        return None if self.measured is None else float(ranking.condition_error(self.measured, self.requested))

    @property
    def realness(self) -> float | None:
        best = self.after or self.before
        return None if best is None else best.realness

    def rank(self) -> float:
        return ranking.rank(self.realness or 0.0, self.condition_error or 0.0)


async def _nothing() -> None:
    return None


async def _all_or_none(calls: list[Awaitable]) -> list:
    """Every result, or the first failure with the other calls cancelled (a request that failed
    must not keep the services busy with the rest of its work)."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Pipeline:
    def __init__(self, upstreams: Upstreams, timeout_s: float, encode: Encode | None = None,
                 max_per_call: int = 256, max_timeout_s: float | None = None,
                 admission: Admission | None = None) -> None:
        """timeout_s: a request's time when its caller sets no deadline; max_timeout_s: the most
        a caller's deadline is honoured (default timeout_s)."""
        self.up, self.timeout_s, self.encode = upstreams, timeout_s, encode
        self.max_timeout_s = max_timeout_s or timeout_s
        self.max_per_call = max_per_call  # the model services' max_images_per_request
        self.admission = admission or Admission()

    def budget_s(self, timeout_s: float | None) -> float:
        return request_budget(timeout_s, self.timeout_s, self.max_timeout_s)

    def _left(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request ran out of time")
        return left

    async def _optional(self, spec: GenerateSpec, service: str, call, degraded: set[str]):
        """Run an upstream call that a face can do without when the request allows partial answers."""
        try:
            return await call
        except UpstreamUnavailable:
            if not spec.allow_partial:
                raise
            metrics.DEGRADED.labels(service).inc()
            degraded.add(service)
            return None

    async def chain(self, spec: GenerateSpec, candidates: range, deadline: float, degraded: set[str]) -> list[Face]:
        # with allow_partial a down checker only leaves its figures out, so only the sampler must answer
        self.up.check_reachable(["sampler"] if spec.allow_partial else ["sampler", "critic", "attributes", "filter"])
        requested = requested_conditions(spec, candidates)
        images = await self.up.sample(requested, list(CONDITIONS), spec.temperature, spec.seed + candidates.start,
                                      self._left(deadline))
        faces = [Face(j, spec.seed + j, img, req) for j, img, req in zip(candidates, images, requested, strict=True)]
        if spec.retouch:
            got = await self._optional(spec, "critic", self.up.retouch(images, self._left(deadline)), degraded)
            if got is not None:
                images, before, after = got
                for f, img, b, a in zip(faces, images, before, after, strict=True):
                    f.image, f.before, f.after, f.retouched = img, b, a, True
        else:
            got = await self._optional(spec, "critic", self.up.score(images, self._left(deadline)), degraded)
            for f, b in zip(faces, got or [], strict=False):
                f.before = b
        left = self._left(deadline)
        # Every candidate is kept without oversampling, so its image is final now: encoding it
        # while the checkers run takes the encoding off the request's critical path (16 faces:
        # ~5 ms of PNG). With oversampling only the kept faces are encoded, after the choice.
        encode = self.encode(images) if self.encode is not None and spec.oversample == 1 else _nothing()
        measured, p_female, encoded = await asyncio.gather(
            self._optional(spec, "attributes", self.up.measure(images, list(CONDITIONS), left), degraded),
            self._optional(spec, "filter", self.up.p_female(images, left), degraded),
            encode)
        if encoded is not None:
            for f, data in zip(faces, encoded, strict=True):
                f.encoded = data
        for i, f in enumerate(faces):
            f.measured = None if measured is None else measured[i]
            f.p_female = None if p_female is None else float(p_female[i])
            f.missing = sorted(degraded)
        return faces

    async def generate(self, spec: GenerateSpec, timeout_s: float | None = None) -> tuple[list[Face], set[str]]:
        budget = self.budget_s(timeout_s)
        with self.admission.admit(spec.candidates, budget):
            return await self._generate(spec, time.monotonic() + budget)

    async def _generate(self, spec: GenerateSpec, deadline: float) -> tuple[list[Face], set[str]]:
        degraded: set[str] = set()
        # one trip through the chain for all candidates: splitting a request into chunks that run
        # side by side measured slower (124 vs 105 ms for 16 faces on 2 cores): the lanes already keep
        # every core busy, and more, smaller calls only add hops. Only candidates beyond what a
        # model service takes in one call (64 faces × oversample 8 = 512 > 256) go in several,
        # each of whole faces' groups.
        n, step = spec.candidates, max(self.max_per_call // spec.oversample, 1) * spec.oversample
        parts = await _all_or_none([self.chain(spec, range(i, min(i + step, n)), deadline, degraded)
                                    for i in range(0, n, step)])
        return self._keep(spec, [f for part in parts for f in part]), degraded

    async def stream(self, spec: GenerateSpec, chunk: int, timeout_s: float | None = None) -> AsyncIterator[Face]:
        """Faces as they are ready, `chunk` faces (and their candidates) a round trip."""
        budget = self.budget_s(timeout_s)
        k = spec.oversample
        with self.admission.admit(spec.candidates, budget):
            deadline = time.monotonic() + budget
            for start in range(0, spec.count, chunk):
                faces = await self.chain(spec, range(start * k, min(start + chunk, spec.count) * k), deadline, set())
                for f in self._keep(spec, faces):
                    yield f

    def _keep(self, spec: GenerateSpec, faces: list[Face]) -> list[Face]:
        """The best candidate of each face's group (faces in candidate order, whole groups)."""
        kept = [faces[i] for i in ranking.best_of_groups([f.rank() for f in faces], spec.oversample)]
        metrics.CANDIDATES.labels("kept").inc(len(kept))
        metrics.CANDIDATES.labels("rejected").inc(len(faces) - len(kept))
        for f in kept:
            if f.before is not None:
                metrics.REALNESS.labels("before").observe(f.before.realness)
            if f.after is not None:
                metrics.REALNESS.labels("after").observe(f.after.realness)
            if f.condition_error is not None:
                metrics.CONDITION_ERROR.observe(f.condition_error)
        return kept
