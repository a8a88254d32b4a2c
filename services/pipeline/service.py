"""GenerationService: the user-facing pipeline over gRPC (facegen.v1.GenerationService:
Generate, GenerateStream, Edit) and HTTP (POST /generate, POST /edit, the playground page at /),
calling the four model services over gRPC.

    bentoml serve services.pipeline.service:GenerationService --port 3000   # + gRPC on 50050

Settings (env, FACEGEN_PIPELINE_<NAME> or FACEGEN_<NAME>): SAMPLER / CRITIC / ATTRIBUTES /
FILTER (host:port of each service's gRPC endpoint), GRPC_PORT, TIMEOUT_S, MAX_FACES,
MAX_TIMEOUT_S, MAX_CANDIDATES, MAX_OVERSAMPLE, STREAM_CHUNK, COALESCE, UPSTREAM_MAX_IMAGES.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from pydantic import BaseModel, Discriminator, Field, Tag, model_validator

from services.core.bento import INSTANCES, forbid_unknown_fields, port_check, status_app
from services.core.body_limit import BodyLimit
from services.core.errors import BadRequest
from services.core.grpc_server import GrpcServer
from services.core.metrics import ServiceMetrics
from services.core.proto import pb, rpc
from services.core.runtime import grpc_call, http_call, remaining, settings_from_env
from services.core.wire import Seed, to_json
from services.pipeline.admission import Admission, AdmissionConfig
from services.pipeline.edit import Edited, edit_face, validate_edit
from services.pipeline.generate import Face, Pipeline, validate
from services.pipeline.playground import Playground
from services.pipeline.upstream import Upstreams
from services.shared import images as imgs
from services.shared.conditions import CONDITIONS
from services.shared.ports import grpc_port, grpc_target
from services.shared.ranking import DEFAULT_OVERSAMPLE
from services.shared.sampling import DEFAULT_TEMPERATURE, MAX_TEMPERATURE


@dataclass(frozen=True)
class PipelineConfig:
    sampler: str = grpc_target("sampler")
    critic: str = grpc_target("critic")
    attributes: str = grpc_target("attributes")
    filter: str = grpc_target("filter")
    grpc_port: int = grpc_port("pipeline")
    grpc_host: str = "0.0.0.0"
    timeout_s: float = 30.0  # per request, when the caller sets no deadline (HTTP)
    max_timeout_s: float = 120.0  # the longest gRPC deadline honoured (the largest request needs ~30 s here)
    # admission control (services/pipeline/admission.py): candidates in flight at most; a request
    # that cannot finish in its deadline behind them is refused at once, retryable
    max_candidates: int = 2048
    max_faces: int = 256
    max_oversample: int = 8
    stream_chunk: int = 4  # faces per round trip of GenerateStream
    # concurrent small requests share a call to the critic, attributes and filter while this many
    # of a kind are in flight (0 = each request calls alone): services/pipeline/coalesce.py
    coalesce: int = 1
    # the most images the model services take in one call (their FACEGEN_MAX_IMAGES_PER_REQUEST):
    # a request's candidates (count × oversample, up to 2048) beyond it are sent in several calls
    upstream_max_images: int = 256


def _conditions(v) -> dict[str, float]:
    return dict(zip(CONDITIONS, map(float, v), strict=True))


# Pillow's zlib releases the GIL: faces are PNG-encoded side by side, off the event loop
_PNG_POOL = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="png")


async def encode_pngs(images: list[np.ndarray]) -> list[bytes]:
    loop = asyncio.get_running_loop()
    return list(await asyncio.gather(*(loop.run_in_executor(_PNG_POOL, imgs.encode_png, im) for im in images)))


async def pngs_of(faces: list[Face]) -> list[bytes]:
    """Each face's PNG: the one the pipeline encoded while its checkers ran, else encoded now."""
    todo = [f for f in faces if f.encoded is None]
    for f, png in zip(todo, await encode_pngs([f.image for f in todo]), strict=True):
        f.encoded = png
    return [f.encoded for f in faces]


def face_pb(f: Face, png: bytes) -> pb.GeneratedFace:
    msg = pb.GeneratedFace(png=png, seed=f.seed, candidate=f.candidate,
                           requested=pb.Conditions(**_conditions(f.requested)), retouched=f.retouched, missing=f.missing)
    if f.measured is not None:
        msg.measured.CopyFrom(pb.Conditions(**_conditions(f.measured)))
        msg.error.CopyFrom(pb.Conditions(**_conditions(abs(f.measured - f.requested))))
        msg.condition_error = f.condition_error
    if f.before is not None:
        msg.realness_before = f.before.realness
    if f.after is not None:
        msg.realness_after = f.after.realness
    if f.p_female is not None:
        msg.p_female = f.p_female
    return msg


def spec_from_pb(request, cfg: PipelineConfig):
    wanted = {}
    for name in CONDITIONS:
        if request.conditions.HasField(name):
            c = getattr(request.conditions, name)
            kind = c.WhichOneof("request")
            wanted[name] = c.value if kind == "value" else (c.range.min, c.range.max) if kind == "range" else None
    return validate(wanted, request.count, request.temperature if request.HasField("temperature") else None,
                    request.seed, request.retouch if request.HasField("retouch") else None, request.oversample,
                    request.allow_partial, cfg.max_faces, cfg.max_oversample)


def _edit_pb(e: Edited, png: bytes, changed: list[str]) -> pb.EditFaceResponse:
    msg = pb.EditFaceResponse(png=png, measured_before=pb.Conditions(**_conditions(e.measured_before)),
                              requested=pb.Conditions(**_conditions(e.requested)),
                              measured_after=pb.Conditions(**_conditions(e.measured_after)), retouched=e.retouched,
                              changed=changed)
    if e.before is not None:
        msg.realness_before = e.before.realness
    if e.after is not None:
        msg.realness_after = e.after.realness
    return msg


async def _generate_pb(spec, faces: list[Face], degraded) -> pb.GenerateResponse:
    pngs = await pngs_of(faces)
    return pb.GenerateResponse(faces=[face_pb(f, png) for f, png in zip(faces, pngs, strict=True)],
                               degraded=sorted(degraded), candidates=spec.candidates)


class GenerationServicer(rpc.GenerationServiceServicer):
    def __init__(self, svc: GenerationService) -> None:
        self.svc = svc

    async def Generate(self, request, context):
        async with grpc_call(self.svc.metrics, "Generate", context):
            spec = spec_from_pb(request, self.svc.cfg)
            faces, degraded = await self.svc.pipeline.generate(spec, remaining(context))
            return await _generate_pb(spec, faces, degraded)

    async def Edit(self, request, context):
        async with grpc_call(self.svc.metrics, "Edit", context):
            if request.image.WhichOneof("data") != "encoded":
                raise BadRequest("send the face as an encoded image (PNG, JPEG, …) in image.encoded")
            changes = {n: getattr(request.target, n) for n in CONDITIONS if request.target.HasField(n)}
            spec = validate_edit(request.image.encoded, changes, request.retouch if request.HasField("retouch") else None,
                                 request.keep_groups if request.HasField("keep_groups") else None, request.seed)
            edited = await edit_face(self.svc.pipeline, spec, remaining(context))
            return _edit_pb(edited, (await encode_pngs([edited.image]))[0], sorted(spec.changes))

    async def GenerateStream(self, request, context):
        async with grpc_call(self.svc.metrics, "GenerateStream", context):
            spec = spec_from_pb(request, self.svc.cfg)
            async for f in self.svc.pipeline.stream(spec, self.svc.cfg.stream_chunk, remaining(context)):
                await context.write(face_pb(f, (await pngs_of([f]))[0]))


Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class RangeIn(BaseModel):
    min: Unit
    max: Unit

    @model_validator(mode="after")
    def ordered(self):
        if self.min > self.max:
            raise ValueError(f"range min {self.min} is above max {self.max}")
        return self


def _kind(v) -> str:
    return "range" if isinstance(v, dict | RangeIn) else "value"


# The shape of the JSON picks the branch, so a bad range is reported as a bad range alone (not
# also as "Input should be a valid number"), and a bad number as a bad number.
Wanted = Annotated[Annotated[Unit, Tag("value")] | Annotated[RangeIn, Tag("range")], Discriminator(_kind)] | None


class ConditionsIn(BaseModel):
    """Each condition: a number in [0, 1], {"min", "max"}, or null / left out for uniform in [0, 1]."""

    model_config = {"extra": "forbid"}
    eyes: Wanted = None
    mouth: Wanted = None
    hair_color: Wanted = None
    background: Wanted = None
    head: Wanted = None


@bentoml.asgi_app(status_app("pipeline"), path="/v1")
@bentoml.service(name="facegen-pipeline", workers=1, traffic={"timeout": 120, "max_concurrency": 256})
class GenerationService:
    check_ports = port_check("pipeline")

    def __init__(self) -> None:
        self.cfg = settings_from_env(PipelineConfig, "pipeline")
        self.metrics = ServiceMetrics("pipeline")
        self.upstreams: Upstreams | None = None
        self.pipeline: Pipeline | None = None
        self.grpc = GrpcServer(self.cfg.grpc_port, ["facegen.v1.GenerationService"],
                               lambda s: rpc.add_GenerationServiceServicer_to_server(GenerationServicer(self), s),
                               host=self.cfg.grpc_host)
        INSTANCES["pipeline"] = self

    @bentoml.on_startup
    async def start(self) -> None:
        # channels belong to the worker's event loop, so they are made here rather than in __init__
        self.upstreams = Upstreams({"sampler": self.cfg.sampler, "critic": self.cfg.critic,
                                    "attributes": self.cfg.attributes, "filter": self.cfg.filter},
                                   coalesce=self.cfg.coalesce)
        self.pipeline = Pipeline(self.upstreams, self.cfg.timeout_s, encode_pngs, self.cfg.upstream_max_images,
                                 self.cfg.max_timeout_s, Admission(AdmissionConfig(max_candidates=self.cfg.max_candidates)))
        await self.grpc.start()

    @bentoml.on_shutdown
    async def stop(self) -> None:
        await self.grpc.stop()
        if self.upstreams is not None:
            await self.upstreams.close()

    def __is_ready__(self) -> bool:
        return self.grpc.serving

    def status(self) -> dict:
        adm = self.pipeline.admission if self.pipeline is not None else None
        return {"ready": self.grpc.serving, "grpc": {"port": self.cfg.grpc_port, "serving": self.grpc.serving},
                "admission": None if adm is None else {"candidates_in_flight": adm.in_flight,
                                                        "limit": adm.cfg.max_candidates,
                                                        "measured_faces_per_s": adm.rate, "finished": adm.finished},
                "upstreams": {"sampler": self.cfg.sampler, "critic": self.cfg.critic,
                              "attributes": self.cfg.attributes, "filter": self.cfg.filter}}

    @bentoml.api(route="/generate")
    async def generate(
        self,
        conditions: ConditionsIn | None = None,
        count: Annotated[int, Field(ge=0, strict=True)] = 1,
        temperature: Annotated[float, Field(ge=0.0, le=MAX_TEMPERATURE)] = DEFAULT_TEMPERATURE,
        seed: Seed = 0,
        retouch: bool = True,
        oversample: Annotated[int, Field(ge=0, strict=True)] = 0,  # 0: the default (services/shared/ranking.py)
        allow_partial: bool = False,
    ) -> dict:
        """Faces for the requested conditions, with realness, measured conditions and P(female): the
        GenerateResponse message (count ≤ FACEGEN_PIPELINE_MAX_FACES, oversample ≤ MAX_OVERSAMPLE)."""

        async def work():
            wanted = {}
            for name in CONDITIONS:
                v = getattr(conditions, name) if conditions is not None else None
                wanted[name] = (v.min, v.max) if isinstance(v, RangeIn) else v
            spec = validate(wanted, count, temperature, seed, retouch, oversample, allow_partial,
                            self.cfg.max_faces, self.cfg.max_oversample)
            faces, degraded = await self.pipeline.generate(spec)
            return to_json(await _generate_pb(spec, faces, degraded))

        return await http_call(self.metrics, "generate", work)

    @bentoml.api(route="/edit")
    async def edit(
        self,
        image: Path,
        eyes: Annotated[float, Field(ge=0.0, le=1.0)] | None = None,
        mouth: Annotated[float, Field(ge=0.0, le=1.0)] | None = None,
        hair_color: Annotated[float, Field(ge=0.0, le=1.0)] | None = None,
        background: Annotated[float, Field(ge=0.0, le=1.0)] | None = None,
        head: Annotated[float, Field(ge=0.0, le=1.0)] | None = None,
        retouch: bool = True,
        keep_groups: Annotated[int, Field(ge=0, strict=True)] | None = None,
        seed: Seed = 0,
    ) -> dict:
        """Your face (multipart file `image`) with the conditions you give changed, the rest kept: the
        EditFaceResponse message."""

        async def work():
            changes = {"eyes": eyes, "mouth": mouth, "hair_color": hair_color, "background": background, "head": head}
            spec = validate_edit(image.read_bytes(), changes, retouch, keep_groups, seed)
            edited = await edit_face(self.pipeline, spec, None)
            return to_json(_edit_pb(edited, (await encode_pngs([edited.image]))[0], sorted(spec.changes)))

        return await http_call(self.metrics, "edit", work)


def playground_config() -> dict:
    """What the playground page needs to build valid requests: the API's names and limits."""
    cfg = INSTANCES["pipeline"].cfg if "pipeline" in INSTANCES else settings_from_env(PipelineConfig, "pipeline")
    return {"conditions": list(CONDITIONS), "default_temperature": DEFAULT_TEMPERATURE,
            "default_oversample": DEFAULT_OVERSAMPLE, "max_faces": cfg.max_faces, "max_oversample": cfg.max_oversample}


# bodies over the limit are refused (413) before BentoML reads them
forbid_unknown_fields(GenerationService)
GenerationService.add_asgi_middleware(BodyLimit, service="pipeline")
GenerationService.add_asgi_middleware(Playground, config=playground_config)
