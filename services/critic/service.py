"""CriticService: realness of faces (overall and per region) and their retouch, over HTTP
(BentoML) and gRPC (facegen.v1.CriticService), on the shared serving core.

    bentoml serve services.critic.service:CriticService --port 3004   # + gRPC on 50054

Two exports: the critic (exports/critic/1, scores) and the refiner (exports/refiner/1, which
carries the critic that flags the regions to retouch inside its graph). Both are feed-forward
ONNX graphs behind their own micro-batchers. Settings (env): FACEGEN_CRITIC_EXPORT,
FACEGEN_REFINER_EXPORT, FACEGEN_CRITIC_GRPC_PORT and the common FACEGEN_* serving variables.
"""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np

from services.core.bento import ModelService, Unready, body_route, forbid_unknown_fields, port_check, status_app
from services.core.body_limit import BodyLimit
from services.core.proto import pb, rpc
from services.core.runtime import ImageModel, ServingConfig, grpc_call, http_call, remaining
from services.core.wire import to_json
from services.shared import images as imgs


def _realness(out: dict[str, np.ndarray]) -> list[pb.Realness]:
    """The critic's outputs as messages: each face's realness and its size × size map, row-major."""
    return [pb.Realness(realness=float(r), realness_map=pb.RealnessMap(size=m.shape[0], values=m.ravel().tolist()))
            for r, m in zip(out["realness"], out["realness_map"], strict=True)]


async def score(critic: ImageModel, decoded: list[np.ndarray], timeout_s: float | None = None) -> list[pb.Realness]:
    return _realness(await critic.infer(critic.prepare(decoded), timeout_s))


async def retouch(critic: ImageModel, refiner: ImageModel, decoded: list[np.ndarray],
                  timeout_s: float | None = None) -> tuple[np.ndarray, list[pb.Realness], list[pb.Realness]]:
    """(retouched uint8 images, realness before, realness after)."""
    batch = critic.prepare(decoded)
    images = (await refiner.infer(batch, timeout_s))["retouched"]
    # one critic call scores both: on two cores, running the critic beside the refiner only made
    # their thread pools compete
    both = _realness(await critic.infer(np.concatenate([batch, images]), timeout_s))
    return images, both[: len(batch)], both[len(batch) :]


class CriticServicer(rpc.CriticServiceServicer):
    def __init__(self, svc: CriticService) -> None:
        self.svc = svc

    async def Score(self, request, context):
        critic = self.svc.model
        async with grpc_call(critic.metrics, "Score", context):
            return await _score_pb(self.svc, await critic.decode(request.images), remaining(context))

    async def Retouch(self, request, context):
        critic = self.svc.model
        async with grpc_call(critic.metrics, "Retouch", context):
            decoded = await critic.decode(request.images)
            return await _retouch_pb(self.svc, decoded, request.raw_output, remaining(context))


async def _score_pb(svc: CriticService, decoded: list[np.ndarray], timeout_s: float | None = None) -> pb.ScoreResponse:
    return pb.ScoreResponse(scores=await score(svc.model, decoded, timeout_s), model=pb.ModelInfo(**svc.model.info))


async def _retouch_pb(svc: CriticService, decoded: list[np.ndarray], raw: bool,
                      timeout_s: float | None = None) -> pb.RetouchResponse:
    images, before, after = await retouch(svc.model, svc.refiner, decoded, timeout_s)
    h, w = images.shape[1:3]
    faces = [pb.RetouchedFace(image=pb.Image(raw=pb.RawImage(pixels=img.tobytes(), height=h, width=w)) if raw
                              else pb.Image(encoded=imgs.encode_png(img)),
                              before=b, after=a)
             for img, b, a in zip(images, before, after, strict=True)]
    return pb.RetouchResponse(faces=faces, critic=pb.ModelInfo(**svc.model.info), refiner=pb.ModelInfo(**svc.refiner.info))


async def _score_body(svc: CriticService, decoded: list[np.ndarray]) -> dict:
    return to_json(await _score_pb(svc, decoded))


async def _retouch_body(svc: CriticService, decoded: list[np.ndarray]) -> dict:
    return to_json(await _retouch_pb(svc, decoded, raw=False))


@bentoml.asgi_app(status_app("critic", [body_route("critic", "score", _score_body),
                                        body_route("critic", "retouch", _retouch_body)]), path="/v1")
@bentoml.service(name="facegen-critic", workers=1, traffic={"timeout": 60, "max_concurrency": 512})
class CriticService(ModelService):
    model_name = "critic"
    grpc_services = ["facegen.v1.CriticService"]
    check_ports = port_check("critic")
    # two small graphs, four sessions: ONNX Runtime's arena kept 2.5 × the service's resting memory
    # after a burst and made neither faster (tests/perf/service_memory.py, README)
    serving_defaults = {"cpu_arena": 0}

    def __init__(self) -> None:
        # the refiner first: init_model registers the servicer, which needs both models
        self.refiner = None
        with self.loading():
            self.refiner = ImageModel("refiner", ServingConfig.from_env("refiner", **self.serving_defaults))
        self.init_model(lambda server: rpc.add_CriticServiceServicer_to_server(CriticServicer(self), server))

    @bentoml.on_shutdown
    async def close_refiner(self) -> None:
        if self.refiner is not None:
            await self.refiner.batcher.close()

    def status(self) -> dict:
        return {**super().status(), "refiner": {**self.refiner.info, "lone_threads": self.refiner.lone_threads}}

    @bentoml.api(route="/score")
    async def score(self, images: list[Path]) -> dict:
        """Realness and realness map (size × size values, row-major) for uploaded image files (multipart
        field `images`, repeatable): the ScoreResponse message."""

        async def work():
            return await _score_body(self, await self.model.decode([f.read_bytes() for f in images], "bytes"))

        return await http_call(self.model.metrics, "score", work)

    @bentoml.api(route="/retouch")
    async def retouch(self, images: list[Path]) -> dict:
        """Retouched faces (base64 PNG in image.encoded) with realness and map before and after: the
        RetouchResponse message."""

        async def work():
            return await _retouch_body(self, await self.model.decode([f.read_bytes() for f in images], "bytes"))

        return await http_call(self.model.metrics, "retouch", work)


# bodies over the limit are refused (413) before BentoML reads them
forbid_unknown_fields(CriticService)
CriticService.add_asgi_middleware(Unready, service="critic")
CriticService.add_asgi_middleware(BodyLimit, service="critic")
