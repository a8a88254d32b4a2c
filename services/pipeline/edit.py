"""One edit of a user's face: the attribute service measures it, the sampler redraws it with the
conditions the request changes (its encoder keeps the face's latents), the critic retouches the
result, and the attribute service measures the edited face.

A condition the request leaves out keeps the face's measured value, so only what was asked
changes. The image goes to the services as the user sent it: each decodes and fits it by the
rule every model is served with, under the same limits (size, pixels) as every other request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from services.core import metrics
from services.core.errors import BadRequest
from services.pipeline.generate import Pipeline
from services.pipeline.upstream import Realness
from services.shared.conditions import CONDITIONS


@dataclass(frozen=True)
class EditSpec:
    image: bytes
    changes: dict[str, float]  # condition → target value
    retouch: bool
    keep_groups: int | None
    seed: int


@dataclass
class Edited:
    image: np.ndarray
    measured_before: np.ndarray
    requested: np.ndarray
    measured_after: np.ndarray
    before: Realness | None
    after: Realness | None
    retouched: bool


def validate_edit(image: bytes, changes: dict[str, float | None], retouch: bool | None, keep_groups: int | None,
                  seed: int) -> EditSpec:
    if not image:
        raise BadRequest("no image: send the face to edit")
    unknown = set(changes) - set(CONDITIONS)
    if unknown:
        raise BadRequest(f"unknown condition(s) {', '.join(sorted(unknown))}; known: {', '.join(CONDITIONS)}")
    given = {k: float(v) for k, v in changes.items() if v is not None}
    if not given:
        raise BadRequest(f"say which condition(s) to change: {', '.join(CONDITIONS)}")
    for name, v in given.items():
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise BadRequest(f"{name} must be in [0, 1], got {v}")
    if keep_groups is not None and keep_groups < 0:
        raise BadRequest(f"keep_groups must be ≥ 0, got {keep_groups}")
    if not 0 <= seed < 2**63:
        raise BadRequest("seed must be in [0, 2^63)")
    return EditSpec(image, given, True if retouch is None else bool(retouch), keep_groups, int(seed))


async def edit_face(pipeline: Pipeline, spec: EditSpec, timeout_s: float | None) -> Edited:
    """The edit within the caller's time (the pipeline's budget), admitted as one face's work."""
    budget = pipeline.budget_s(timeout_s)
    with pipeline.admission.admit(1, budget):
        return await _edit(pipeline, spec, budget)


async def _edit(pipeline: Pipeline, spec: EditSpec, timeout_s: float) -> Edited:
    up = pipeline.up
    t0 = time.monotonic()
    deadline = t0 + timeout_s

    def left() -> float:
        rest = deadline - time.monotonic()
        if rest <= 0:
            raise TimeoutError("the edit ran out of time")
        return rest

    names = list(CONDITIONS)
    before = await up.measure_encoded(spec.image, names, left())
    target = before.copy()
    for name, v in spec.changes.items():
        target[names.index(name)] = v
    face = await up.edit(spec.image, before, target, names, spec.keep_groups, spec.seed, left())
    images, r_before, r_after, retouched = face[None], None, None, False
    if spec.retouch:
        images, rb, ra = await up.retouch(images, left())
        r_before, r_after, retouched = rb[0], ra[0], True
    after = await up.measure(images, names, left())
    seconds = time.monotonic() - t0
    for name in spec.changes:
        metrics.EDITS.labels(name).inc()
        metrics.EDIT_SECONDS.labels(name).observe(seconds)
    return Edited(images[0], before, target, after[0], r_before, r_after, retouched)
