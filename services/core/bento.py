"""What every facegen BentoML service shares: the model, the in-process gRPC server and their
lifecycle hooks, readiness, the /v1/status details and the fail-fast port check.

A service subclasses ModelService, sets its names, and in __init__ calls
`self.init_model(register)` with a function that adds its gRPC servicer to a server:

    @bentoml.asgi_app(status_app("attributes"), path="/v1")
    @bentoml.service(name="facegen-attributes", workers=1)
    class AttributeService(ModelService):
        model_name, grpc_services = "attributes", ["facegen.v1.AttributeService"]
        check_ports = port_check("attributes")
        def __init__(self): self.init_model(lambda s: rpc.add_AttributeServiceServicer_to_server(..., s))

BentoML finds the hooks below through inheritance (it scans dir() of the service class).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from typing import ClassVar

import bentoml
import grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from services.core.errors import BadRequest
from services.core.grpc_server import GrpcServer, PortInUse, port_is_free
from services.core.runtime import ImageModel, ServingConfig, http_call
from services.shared import images
from services.shared.ports import grpc_port

log = logging.getLogger("facegen.service")

# model name → the live service instance of this worker (for the mounted Starlette routes)
INSTANCES: dict[str, ModelService] = {}


class ModelService:
    model_name: ClassVar[str]
    grpc_services: ClassVar[list[str]]
    serving_defaults: ClassVar[dict] = {}  # ServingConfig defaults of this service (its env still wins)
    # why the model could not be loaded (a missing export, a file that fails its sha256 check):
    # the service then stays up and says so (/readyz 503 with this, /livez 200) instead of its
    # worker dying at start-up and being restarted for ever
    load_error: str | None = None
    grpc: GrpcServer | None = None
    model = None

    @contextmanager
    def loading(self):
        """Model loading: a failure is recorded as load_error, not raised."""
        INSTANCES[self.model_name] = self
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - whatever stops the model, the service reports it
            self.load_error = self.load_error or f"the {self.model_name} model could not be loaded: {exc}"
            log.error("%s", self.load_error, exc_info=exc)

    def init_model(self, register: Callable[[grpc.aio.Server], None], model_type=ImageModel) -> None:
        with self.loading():
            self.cfg = ServingConfig.from_env(self.model_name, grpc_port=grpc_port(self.model_name), **self.serving_defaults)
            self.model = model_type(self.model_name, self.cfg)
            if self.load_error is None:  # an unready service does not take gRPC calls it cannot answer
                self.grpc = GrpcServer(self.cfg.grpc_port, self.grpc_services, register, host=self.cfg.grpc_host)

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        if self.grpc is not None:
            await self.grpc.start()

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()
        if self.model is not None:
            await self.model.batcher.close()

    def __is_ready__(self) -> bool:
        return self.load_error is None and self.grpc is not None and self.grpc.serving

    def status(self) -> dict:
        if self.load_error is not None:
            return {"ready": False, "error": self.load_error}
        return {
            "ready": self.grpc.serving,
            "model": self.model.info,
            "onnx_sha256": self.model.export.card.get("onnx_sha256"),  # which export exactly (job ids use it)
            "grpc": {"port": self.cfg.grpc_port, "serving": self.grpc.serving},
            "queue": {"images": self.model.batcher.queued, "limit": self.cfg.max_queue},
            "batching": {"max_batch_size": self.cfg.max_batch_size, "max_latency_ms": self.cfg.max_latency_ms,
                         "lanes": self.model.lanes, "lone_threads": self.model.lone_threads},
        }


class Unready:
    """ASGI middleware of a model service whose model did not load: /readyz and /v1/status answer
    503 with the reason, every API route 503 UNAVAILABLE with it; /livez and /metrics as usual."""

    PASS = ("/livez", "/healthz", "/metrics")

    def __init__(self, app, service: str) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send) -> None:
        svc = INSTANCES.get(self.service)
        error = getattr(svc, "load_error", None)
        if scope["type"] != "http" or error is None or scope["path"].rstrip("/") in self.PASS:
            await self.app(scope, receive, send)
            return
        readiness = scope["path"].rstrip("/") in ("/readyz", "/v1/status")
        body = {"ready": False, "error": error} if readiness else {"error": error, "code": "UNAVAILABLE"}
        await JSONResponse(body, status_code=503)(scope, receive, send)


def forbid_unknown_fields(service) -> None:
    """Every API of a BentoML service refuses fields it does not know (400) instead of ignoring
    them: a misspelt option silently falling back to its default is a wrong answer, and an
    unknown field is also where a hostile caller puts bulk."""
    for api in service.apis.values():
        spec = api.input_spec
        if spec is not None and spec.model_config.get("extra") != "forbid":
            spec.model_config["extra"] = "forbid"
            spec.model_rebuild(force=True)


def port_check(model_name: str):
    """An @bentoml.on_deployment hook: runs once in the `bentoml serve` process before any
    worker, so a taken gRPC port stops the server with a message instead of a worker crash loop."""

    def check_ports() -> None:
        cfg = ServingConfig.from_env(model_name, grpc_port=grpc_port(model_name))
        if not port_is_free(cfg.grpc_host, cfg.grpc_port):
            var = f"FACEGEN_{model_name.upper()}_GRPC_PORT"
            raise PortInUse(f"gRPC port {cfg.grpc_host}:{cfg.grpc_port} is already in use; set {var}")

    return bentoml.on_deployment(check_ports)


def status_app(model_name: str, routes: list[BaseRoute] = ()) -> Starlette:
    """GET /status (details behind /readyz: model, provider in use, gRPC, queue) + extra routes."""

    async def status(_: Request) -> JSONResponse:
        svc = INSTANCES.get(model_name)
        if svc is None:
            return JSONResponse({"ready": False}, status_code=503)
        body = svc.status()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    return Starlette(routes=[Route("/status", status), *routes])


async def body_images(request: Request) -> list:
    """Images from a request body: one encoded image, or (Content-Type application/octet-stream)
    raw RGB pixels of n images shaped by X-Height and X-Width headers. Used by the body-only
    routes, which skip BentoML's request parsing (it spools every multipart upload to a file)."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/octet-stream"):
        try:
            h, w = int(request.headers["x-height"]), int(request.headers["x-width"])
        except (KeyError, ValueError):
            raise BadRequest("raw pixels need integer X-Height and X-Width headers") from None
        return images.split_raw(body, h, w)
    return [images.decode(body)]


def body_route(model_name: str, method: str, handle) -> Route:
    """POST /<method>: body_images → `await handle(service, images)` → JSON, with metrics and
    the same error responses as the BentoML routes."""

    async def endpoint(request: Request):
        svc = INSTANCES.get(model_name)
        if svc is None:
            return JSONResponse({"error": "not ready", "code": "UNAVAILABLE"}, status_code=503)

        async def work():
            return JSONResponse(await handle(svc, await body_images(request)))

        return await http_call(svc.model.metrics, method, work)

    return Route(f"/{method}", endpoint, methods=["POST"])
