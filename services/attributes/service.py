"""AttributeService: the five conditions of face images over HTTP (BentoML) and gRPC
(facegen.v1.AttributeService), on the shared serving core.

    bentoml serve services.attributes.service:AttributeService --port 3002   # + gRPC on 50052

Settings (env): FACEGEN_ATTRIBUTES_EXPORT, FACEGEN_ATTRIBUTES_GRPC_PORT and the common
FACEGEN_* serving variables (see services/core/runtime.py).
"""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np

from services.core.bento import ModelService, Unready, body_route, forbid_unknown_fields, port_check, status_app
from services.core.body_limit import BodyLimit
from services.core.proto import pb, rpc
from services.core.runtime import ImageModel, grpc_call, http_call, remaining
from services.core.wire import to_json
from services.shared import images as imgs


async def measure(model: ImageModel, decoded: list[np.ndarray], timeout_s: float | None = None) -> list[dict[str, float]]:
    """Conditions for each decoded image, named in the order of the model's signature."""
    names = model.export.signature["conditions"]
    out = (await model.infer(model.prepare(decoded), timeout_s))["conditions"]
    return [dict(zip(names, map(float, row), strict=True)) for row in out]


class AttributeServicer(rpc.AttributeServiceServicer):
    def __init__(self, model: ImageModel) -> None:
        self.model = model

    async def Infer(self, request, context):
        async with grpc_call(self.model.metrics, "Infer", context):
            return await _infer_pb(self.model, await self.model.decode(request.images), remaining(context))


async def _infer_pb(model: ImageModel, decoded: list[np.ndarray], timeout_s: float | None = None) -> pb.InferResponse:
    rows = await measure(model, decoded, timeout_s)
    return pb.InferResponse(conditions=[pb.Conditions(**r) for r in rows], model=pb.ModelInfo(**model.info))


async def _infer_body(svc: AttributeService, decoded: list[np.ndarray]) -> dict:
    return to_json(await _infer_pb(svc.model, decoded))


@bentoml.asgi_app(status_app("attributes", [body_route("attributes", "infer", _infer_body)]), path="/v1")
@bentoml.service(name="facegen-attributes", workers=1, traffic={"timeout": 60, "max_concurrency": 512})
class AttributeService(ModelService):
    model_name = "attributes"
    grpc_services = ["facegen.v1.AttributeService"]
    check_ports = port_check("attributes")

    def __init__(self) -> None:
        self.init_model(lambda server: rpc.add_AttributeServiceServicer_to_server(AttributeServicer(self.model), server))

    @bentoml.api(route="/infer")
    async def infer(self, images: list[Path]) -> dict:
        """Conditions for uploaded image files (multipart form field `images`, repeatable)."""

        async def work():
            return await _infer_body(self, await self.model.decode([f.read_bytes() for f in images], "bytes"))

        return await http_call(self.model.metrics, "infer", work)

    @bentoml.api(route="/infer_raw")
    async def infer_raw(self, pixels: Path, height: int, width: int) -> dict:
        """Conditions for raw uint8 RGB images: the uploaded file `pixels` holds n·height·width·3 bytes."""

        async def work():
            return await _infer_body(self, imgs.split_raw(pixels.read_bytes(), height, width))

        return await http_call(self.model.metrics, "infer_raw", work)


# bodies over the limit are refused (413) before BentoML reads them
forbid_unknown_fields(AttributeService)
AttributeService.add_asgi_middleware(Unready, service="attributes")
AttributeService.add_asgi_middleware(BodyLimit, service="attributes")
