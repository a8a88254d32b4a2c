"""One mapping from failures to what each transport says: gRPC status codes and HTTP responses.

Bad input is the caller's to fix and gets its message back (INVALID_ARGUMENT / 400); a full
queue is a reason to retry (RESOURCE_EXHAUSTED / 503 + Retry-After); anything unexpected is
logged in full and answered INTERNAL / 500 without internals.
"""

from __future__ import annotations

import logging

import grpc

from services.core.batcher import QueueFull
from services.shared.images import InvalidImage

log = logging.getLogger("facegen.errors")


class BadRequest(ValueError):
    """A request that is well-formed on the wire but asks for something invalid."""


class Forbidden(PermissionError):
    """A request for something outside what this server is configured to allow."""


class NotFound(LookupError):
    """A request for something (a job) that does not exist here."""


class Unavailable(RuntimeError):
    """This server cannot do what was asked, as configured (a model it lacks): UNAVAILABLE / 503."""


class Conflict(RuntimeError):
    """A request that collides with work in progress (the same job already running): not wrong,
    and worth sending again once that work is done."""


class UpstreamUnavailable(ConnectionError):
    """A service this one depends on did not answer (down, overloaded or out of time)."""

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"the {service} service is unavailable: {detail}")
        self.service = service


# exception type → (gRPC status, HTTP status)
_TABLE: list[tuple[type[BaseException], grpc.StatusCode, int]] = [
    (InvalidImage, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED, 403),
    (NotFound, grpc.StatusCode.NOT_FOUND, 404),
    (Conflict, grpc.StatusCode.ABORTED, 409),
    (QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED, 503),
    (UpstreamUnavailable, grpc.StatusCode.UNAVAILABLE, 503),
    (Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED, 504),
]


def classify(exc: BaseException) -> tuple[grpc.StatusCode, int, str]:
    for kind, code, http in _TABLE:
        if isinstance(exc, kind):
            return code, http, str(exc)
    log.exception("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, 500, "internal error; see the server log"


def http_response(exc: BaseException):
    """A JSON error response ({"error", "code"}) with Retry-After when it is worth retrying."""
    from starlette.responses import JSONResponse

    code, status, message = classify(exc)
    headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))} if isinstance(exc, QueueFull) else None
    return JSONResponse({"error": message, "code": code.name}, status_code=status, headers=headers)
