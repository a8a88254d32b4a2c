"""The in-process gRPC server of a BentoML service.

BentoML 1.4 `@bentoml.service` classes cannot serve gRPC themselves, so each service starts a
`grpc.aio` server from an async `@bentoml.on_startup` hook (inside the worker's event loop,
next to the HTTP handlers, sharing their micro-batcher) and stops it in `@bentoml.on_shutdown`.
Health checking and server reflection are served, so `grpcurl` works without .proto files.

SO_REUSEPORT is turned off: with it, a second server — or a stale one — would silently share
the port; without it, a taken port is a clear startup error.
"""

from __future__ import annotations

import inspect
import logging
import socket
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

log = logging.getLogger("facegen.grpc")

MAX_MESSAGE_BYTES = 64 * 2**20


class PortInUse(RuntimeError):
    pass


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port. SO_REUSEADDR, as gRPC's own listener sets it:
    connections of a server that just stopped linger in TIME_WAIT on its port, which must not
    stop its restart; a live listener still makes the bind fail."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class _Undecodable:
    """What a request that is not a valid protobuf of its method's type decodes to."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _invalid(request) -> str | None:
    if isinstance(request, _Undecodable):
        return f"the request is not a valid protobuf message of this method's type ({request.error.__class__.__name__})"
    return None


class DecodeErrors(grpc.aio.ServerInterceptor):
    """Undecodable request bytes are the caller's error: INVALID_ARGUMENT saying so. gRPC's own
    handling answers UNKNOWN ("Exception deserializing request!"), which reads as a server fault.
    Methods whose requests stream (reflection) keep gRPC's handling."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        decode = handler.request_deserializer

        def safe_decode(data: bytes):
            try:
                return decode(data)
            except Exception as exc:  # noqa: BLE001 - any decoding failure is the request's fault
                return _Undecodable(exc)

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request, context):
                if (why := _invalid(request)) is not None:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=safe_decode,
                                                       response_serializer=handler.response_serializer)
        inner_stream = handler.unary_stream

        async def stream(request, context):
            if (why := _invalid(request)) is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
            result = inner_stream(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:  # a handler that writes with context.write
                await result

        return grpc.unary_stream_rpc_method_handler(stream, request_deserializer=safe_decode,
                                                    response_serializer=handler.response_serializer)


class GrpcServer:
    def __init__(
        self,
        port: int,
        service_names: list[str],
        register: Callable[[grpc.aio.Server], None],
        host: str = "0.0.0.0",
    ) -> None:
        self.host, self.port = host, port
        self.service_names = service_names
        self._register = register
        self._server: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None

    async def start(self) -> None:
        if not port_is_free(self.host, self.port):
            raise PortInUse(f"gRPC port {self.host}:{self.port} is already in use; set another with the *_GRPC_PORT variable")
        server = grpc.aio.server(
            interceptors=[DecodeErrors()],
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        self._register(server)
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server,
        )
        if server.add_insecure_port(f"{self.host}:{self.port}") == 0:
            raise PortInUse(f"could not bind gRPC port {self.host}:{self.port}")
        await server.start()
        for name in ("", *self.service_names):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        log.info("gRPC serving %s on %s:%d", ", ".join(self.service_names), self.host, self.port)

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._server = None
