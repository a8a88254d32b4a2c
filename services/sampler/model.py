"""The served sampler: seed → noise (numpy), request validation, batched ONNX Runtime calls.

The seed → noise mapping is part of the contract: face i of a request with seed s is drawn with
`numpy.random.default_rng(s + i)`, which yields standard-normal float32 noise for every latent
group in the order of signature.json's `latent_groups`. Same request → same faces, on any runtime
that runs the same graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.core.errors import BadRequest
from services.core.runtime import BatchedModel, ServingConfig

DEFAULT_TEMPERATURE = 0.8
# a condition a request leaves out: the middle of its range, on both transports (proto3 would
# otherwise read 0.0, i.e. "head turned left")
OMITTED_CONDITION = 0.5
MAX_TEMPERATURE = 2.0


@dataclass(frozen=True)
class SampleSpec:
    conditions: np.ndarray  # float32 [n, 5]
    temperature: float
    seed: int


def noise_for(seed: int, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]


class SamplerModel(BatchedModel):
    """The exported generator behind a micro-batcher. Rows of one batch may ask for different
    temperatures: each distinct temperature is one ONNX Runtime call."""

    def __init__(self, name: str, cfg: ServingConfig) -> None:
        super().__init__(name, cfg, export_name="generator")
        sig = self.export.signature
        self.conditions = sig["conditions"]
        self.shapes = [tuple(s) for s in sig["latent_groups"]]
        self.sizes = [int(np.prod(s)) for s in self.shapes]

    def validate(self, conditions: list[list[float]], count: int, temperature: float | None, seed: int) -> SampleSpec:
        if temperature is None:
            temperature = DEFAULT_TEMPERATURE
        if not (math.isfinite(temperature) and 0.0 <= temperature <= MAX_TEMPERATURE):
            raise BadRequest(f"temperature must be in [0, {MAX_TEMPERATURE}], got {temperature}")
        if not conditions:
            raise BadRequest("give at least one set of conditions")
        cond = np.asarray(conditions, dtype=np.float64)
        if cond.ndim != 2 or cond.shape[1] != len(self.conditions):
            raise BadRequest(f"each conditions entry needs {len(self.conditions)} values ({', '.join(self.conditions)})")
        invalid = ~np.isfinite(cond) | (cond < 0) | (cond > 1)
        if invalid.any():
            bad = [f"{self.conditions[j]}={cond[i, j]}" for i, j in zip(*np.nonzero(invalid), strict=True)]
            raise BadRequest(f"conditions must be finite numbers in [0, 1]: {', '.join(bad[:5])}")
        count = count or len(cond)
        if count > self.cfg.max_images_per_request:
            raise BadRequest(f"count {count} exceeds the maximum of {self.cfg.max_images_per_request} faces per request")
        if len(cond) == 1:
            cond = np.repeat(cond, count, axis=0)
        elif len(cond) != count:
            raise BadRequest(f"{len(cond)} conditions for {count} faces: give one per face, or a single one")
        if not 0 <= seed < 2**63:
            raise BadRequest("seed must be in [0, 2^63)")
        return SampleSpec(cond.astype(np.float32), float(temperature), int(seed))

    def rows(self, spec: SampleSpec) -> np.ndarray:
        """One packed row per face: temperature, conditions, then every group's noise, flattened."""
        n = len(spec.conditions)
        packed = np.empty((n, 1 + len(self.conditions) + sum(self.sizes)), np.float32)
        packed[:, 0] = spec.temperature
        packed[:, 1 : 1 + len(self.conditions)] = spec.conditions
        for i in range(n):
            packed[i, 1 + len(self.conditions) :] = np.concatenate([z.ravel() for z in noise_for(spec.seed + i, self.shapes)])
        return packed

    def _run(self, packed: np.ndarray, session) -> dict[str, np.ndarray]:
        out = np.empty((len(packed), *self.export.signature["outputs"][0]["shape"][1:]), np.uint8)
        for t in np.unique(packed[:, 0]):
            rows = np.nonzero(packed[:, 0] == t)[0]
            feeds = {"conditions": packed[rows, 1 : 1 + len(self.conditions)], "temperature": np.array(t, np.float32)}
            start = 1 + len(self.conditions)
            for g, (shape, size) in enumerate(zip(self.shapes, self.sizes, strict=True)):
                feeds[f"noise_{g}"] = np.ascontiguousarray(packed[rows, start : start + size]).reshape(len(rows), *shape)
                start += size
            out[rows] = session.run(["images"], feeds)[0]
        return {"images": out}

    async def sample(self, spec: SampleSpec, timeout_s: float | None = None) -> np.ndarray:
        return (await self.submit(self.rows(spec), timeout_s))["images"]
