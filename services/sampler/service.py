"""SamplerService: faces from the generator for requested conditions, over HTTP (BentoML) and
gRPC (facegen.v1.SamplerService), on the shared serving core.

    bentoml serve services.sampler.service:SamplerService --port 3003   # + gRPC on 50053

The seed → noise mapping lives in services/sampler/model.py (numpy, documented there).
"""

from __future__ import annotations

from typing import Annotated

import bentoml
import numpy as np
from pydantic import BaseModel, Field

from services.core.bento import ModelService, Unready, forbid_unknown_fields, port_check, status_app
from services.core.body_limit import BodyLimit
from services.core.errors import BadRequest
from services.core.proto import conditions_pb, pb, rpc
from services.core.runtime import decode_images, grpc_call, http_call, remaining
from services.core.wire import Seed, to_json
from services.sampler.model import SamplerModel
from services.shared.conditions import OMITTED
from services.shared.images import encode_png
from services.shared.sampling import DEFAULT_TEMPERATURE, MAX_TEMPERATURE

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class ConditionsIn(BaseModel):
    eyes: Unit = OMITTED
    mouth: Unit = OMITTED
    hair_color: Unit = OMITTED
    background: Unit = OMITTED
    head: Unit = OMITTED


def _face_pb(img: np.ndarray, seed: int, conditions: np.ndarray, names: list[str], raw: bool) -> pb.SampledFace:
    """A face on the wire: raw pixels as they are (no PNG round trip between services), or a PNG."""
    cond = conditions_pb(names, conditions)
    if raw:
        return pb.SampledFace(raw=pb.RawImage(pixels=img.tobytes(), height=img.shape[0], width=img.shape[1]),
                              seed=seed, conditions=cond)
    return pb.SampledFace(png=encode_png(img), seed=seed, conditions=cond)


def _sample_pb(model: SamplerModel, spec, images: np.ndarray, raw: bool) -> pb.SampleResponse:
    faces = [_face_pb(img, spec.seed + i, spec.conditions[i], model.conditions, raw) for i, img in enumerate(images)]
    return pb.SampleResponse(faces=faces, model=pb.ModelInfo(**model.info), temperature=spec.temperature)


class SamplerServicer(rpc.SamplerServiceServicer):
    def __init__(self, model: SamplerModel) -> None:
        self.model = model

    async def Sample(self, request, context):
        async with grpc_call(self.model.metrics, "Sample", context):
            names = self.model.conditions
            conds = [[getattr(c, n) if c.HasField(n) else OMITTED for n in names] for c in request.conditions]
            temperature = request.temperature if request.HasField("temperature") else None
            spec = self.model.validate(conds, request.count, temperature, request.seed)
            images = await self.model.sample(spec, remaining(context))
            return _sample_pb(self.model, spec, images, request.raw_output)

    async def Edit(self, request, context):
        async with grpc_call(self.model.metrics, "Edit", context):
            m, names = self.model, self.model.conditions
            h, w = m.image_size
            images = await decode_images(list(request.images), "proto", m.cfg, h, w)
            if any(not c.HasField(n) for c in request.measured for n in names):
                raise BadRequest(f"each face's measured conditions need all of {', '.join(names)}")
            measured = [[getattr(c, n) for n in names] for c in request.measured]
            target = [[getattr(t, n) if t.HasField(n) else None for n in names] for t in request.target]
            keep = request.keep_groups if request.HasField("keep_groups") else None
            spec = m.validate_edit(images, measured, target, keep, request.seed)
            out = await m.edit(spec, remaining(context))
            faces = [_face_pb(img, spec.seed + i, spec.target[i], names, request.raw_output) for i, img in enumerate(out)]
            return pb.EditResponse(faces=faces, model=pb.ModelInfo(**m.info), latent_groups=len(m.shapes))


@bentoml.asgi_app(status_app("sampler"), path="/v1")
@bentoml.service(name="facegen-sampler", workers=1, traffic={"timeout": 120, "max_concurrency": 256})
class SamplerService(ModelService):
    model_name = "sampler"
    grpc_services = ["facegen.v1.SamplerService"]
    check_ports = port_check("sampler")

    def __init__(self) -> None:
        self.init_model(lambda server: rpc.add_SamplerServiceServicer_to_server(SamplerServicer(self.model), server),
                        model_type=SamplerModel)

    @bentoml.api(route="/sample")
    async def sample(
        self,
        conditions: list[ConditionsIn],
        count: Annotated[int, Field(ge=0, strict=True)] = 0,
        temperature: Annotated[float, Field(ge=0.0, le=MAX_TEMPERATURE)] = DEFAULT_TEMPERATURE,
        seed: Seed = 0,
    ) -> dict:
        """Faces as base64 PNGs: one per conditions entry, or `count` faces for a single entry
        (at most the service's FACEGEN_SAMPLER_MAX_IMAGES_PER_REQUEST). The SampleResponse message."""

        async def work():
            names = self.model.conditions
            spec = self.model.validate([[getattr(c, n) for n in names] for c in conditions], count, temperature, seed)
            return to_json(_sample_pb(self.model, spec, await self.model.sample(spec), raw=False))

        return await http_call(self.model.metrics, "sample", work)


# bodies over the limit are refused (413) before BentoML reads them
forbid_unknown_fields(SamplerService)
SamplerService.add_asgi_middleware(Unready, service="sampler")
SamplerService.add_asgi_middleware(BodyLimit, service="sampler")
