"""The served sampler: seed → noise (numpy), request validation, batched ONNX Runtime calls.

The seed → noise mapping is part of the contract: face i of a request with seed s is drawn with
`numpy.random.default_rng(s + i)`, which yields standard-normal float32 noise for every latent
group in the order of signature.json's `latent_groups`. Same request → same faces, on any runtime
that runs the same graph.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.core.errors import BadRequest, Unavailable
from services.core.exports import create_session
from services.core.runtime import BatchedModel, ServingConfig
from services.shared.exports import beside, read_export
from services.shared.sampling import DEFAULT_TEMPERATURE, MAX_TEMPERATURE, noise_for

log = logging.getLogger("facegen.sampler")



# an edit redraws the kept groups with the face's own latents at temperature 1 (they are the
# encoder's, not draws), and the groups it does not keep with fresh noise at this temperature: an
# edit's own setting (tests/perf/bench_edit.py), cooler than a new face's, as it redraws a face that
# exists rather than varying new ones
EDIT_FREE_TEMPERATURE = 0.8

SAMPLE, EDIT = 0, 1  # which graph a packed row runs on: the sampler, or the edits' redraw


@dataclass(frozen=True)
class SampleSpec:
    conditions: np.ndarray  # float32 [n, 5]
    temperature: float
    seed: int


@dataclass(frozen=True)
class EditSpec:
    images: np.ndarray  # uint8 [n, H, W, 3] at the model's size
    measured: np.ndarray  # float32 [n, 5]
    target: np.ndarray  # float32 [n, 5]
    keep: int  # latent groups, coarsest first, that keep the face's own latents
    seed: int


class SamplerModel(BatchedModel):
    """The exported generator behind a micro-batcher. Rows of one batch may ask for different
    temperatures: each distinct temperature is one ONNX Runtime call."""

    def __init__(self, name: str, cfg: ServingConfig) -> None:
        super().__init__(name, cfg, export_name="generator")
        sig = self.export.signature
        self.conditions = sig["conditions"]
        self.shapes = [tuple(s) for s in sig["latent_groups"]]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.image_size = tuple(sig["outputs"][0]["shape"][1:3])
        self.encoder, self.encoder_error = self._beside("encoder", "FACEGEN_ENCODER_EXPORT", 1)
        # edits redraw through the sampler without its refinement where the export has one (training/two_stage.py)
        self.redraw, why = self._beside("redraw", "FACEGEN_REDRAW_EXPORT", self._lane_threads)
        if self.redraw is None:
            log.info("edits redraw through the sampler itself: %s", why)

    def _beside(self, kind: str, variable: str, threads: int):
        """The `kind` export that belongs to this generator (`variable`, default the one beside it:
        services.shared.exports.beside) and its session, or (None, why not):
        a sampler without an encoder still samples, and answers edits with the reason."""
        path = Path(os.environ.get(variable) or beside(self.export.path, kind))
        try:
            export = read_export(path)
            groups = [tuple(g) for g in export.signature.get("latent_groups", [])]
            if groups != self.shapes:
                raise ValueError(f"its latent groups {groups} are not the generator's {self.shapes}")
            session, _ = create_session(export, self.cfg.device, threads)
        except Exception as exc:  # noqa: BLE001 - any reason the export cannot serve is reported the same way
            why = f"no usable {kind} export at {path}: {exc}"
            if kind == "encoder":
                log.warning("edits disabled: %s", why)
            return None, why
        return session, None

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

    def validate_edit(self, images: list[np.ndarray], measured: list[list[float]], target: list[list[float | None]],
                      keep: int | None, seed: int) -> EditSpec:
        if self.encoder is None:
            raise Unavailable(f"this sampler cannot edit: {self.encoder_error}")
        n = len(images)
        if len(measured) != n or len(target) != n:
            raise BadRequest(f"{n} images need {n} measured and {n} target conditions, got {len(measured)} and {len(target)}")
        arrays = []
        for name, rows in (("measured", measured), ("target", target)):
            if any(len(row) != len(self.conditions) for row in rows):
                raise BadRequest(f"{name} conditions must be {len(self.conditions)} finite numbers in [0, 1] per face")
            if arrays:  # a target condition left out (None) keeps the face's own, measured value
                rows = [[own if t is None else t for t, own in zip(trow, mrow, strict=True)]
                        for trow, mrow in zip(rows, arrays[0].tolist(), strict=True)]
            a = np.asarray(rows, dtype=np.float64)
            if not (np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all()):
                raise BadRequest(f"{name} conditions must be {len(self.conditions)} finite numbers in [0, 1] per face")
            arrays.append(a)
        measured_a, target_a = (a.astype(np.float32) for a in arrays)
        groups = len(self.shapes)
        keep = groups if keep is None else int(keep)
        if not 0 <= keep <= groups:
            raise BadRequest(f"keep_groups must be in [0, {groups}], got {keep}")
        if not 0 <= seed < 2**63:
            raise BadRequest("seed must be in [0, 2^63)")
        return EditSpec(np.stack(images), measured_a, target_a, keep, int(seed))

    async def edit(self, spec: EditSpec, timeout_s: float | None = None) -> np.ndarray:
        """The faces redrawn with their target conditions: the encoder's latents for the kept
        groups, fresh noise (seed + i) for the others."""
        noise = await asyncio.to_thread(self.encoder.run, None, {"images": spec.images, "conditions": spec.measured})
        kept = [[noise[g][i] if g < spec.keep else EDIT_FREE_TEMPERATURE * z
                 for g, z in enumerate(noise_for(spec.seed + i, self.shapes))] for i in range(len(spec.images))]
        return (await self.submit(self._pack(EDIT, 1.0, spec.target, kept), timeout_s))["images"]

    def rows(self, spec: SampleSpec) -> np.ndarray:
        """One packed row per face, its noise drawn from its seed (the contract above)."""
        return self._pack(SAMPLE, spec.temperature, spec.conditions,
                          [noise_for(spec.seed + i, self.shapes) for i in range(len(spec.conditions))])

    def _pack(self, graph: int, temperature: float, conditions: np.ndarray, noise: list[list[np.ndarray]]) -> np.ndarray:
        """One row per face: the graph it runs on (SAMPLE or EDIT), temperature, conditions, then
        every group's noise, flattened."""
        head = 2 + len(self.conditions)
        packed = np.empty((len(conditions), head + sum(self.sizes)), np.float32)
        packed[:, 0], packed[:, 1] = graph, temperature
        packed[:, 2:head] = conditions
        for i, groups in enumerate(noise):
            packed[i, head:] = np.concatenate([z.ravel() for z in groups])
        return packed

    def _run(self, packed: np.ndarray, session) -> dict[str, np.ndarray]:
        out = np.empty((len(packed), *self.export.signature["outputs"][0]["shape"][1:]), np.uint8)
        head = 2 + len(self.conditions)
        for graph, t in np.unique(packed[:, :2], axis=0):
            rows = np.nonzero((packed[:, 0] == graph) & (packed[:, 1] == t))[0]
            use = self.redraw if graph == EDIT and self.redraw is not None else session
            feeds = {"conditions": packed[rows, 2:head], "temperature": np.array(t, np.float32)}
            start = head
            for g, (shape, size) in enumerate(zip(self.shapes, self.sizes, strict=True)):
                feeds[f"noise_{g}"] = np.ascontiguousarray(packed[rows, start : start + size]).reshape(len(rows), *shape)
                start += size
            out[rows] = use.run(["images"], feeds, self.run_options(use))[0]
        return {"images": out}

    async def sample(self, spec: SampleSpec, timeout_s: float | None = None) -> np.ndarray:
        return (await self.submit(self.rows(spec), timeout_s))["images"]
