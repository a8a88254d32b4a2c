"""An ASGI middleware that refuses a request body over a limit with 413 before a route reads it.

BentoML reads a whole body before it validates it: a 200 MiB body to /classify was read into
memory before its 400, and a 50 MiB unknown field in /generate was accepted. A declared
Content-Length over the limit is refused without reading anything; a chunked body is read up to
the limit, then refused, or handed on whole.

Limits: FACEGEN_<SERVICE>_MAX_BODY_BYTES (else FACEGEN_MAX_BODY_BYTES, else 64 MiB, the gRPC
message limit); routes listed in `large` (the filter's archive upload) have their own.
"""

from __future__ import annotations

import json
import os

DEFAULT_MAX_BODY_BYTES = 64 * 2**20


def limit_from_env(service: str, name: str = "MAX_BODY_BYTES", default: int = DEFAULT_MAX_BODY_BYTES) -> int:
    for key in (f"FACEGEN_{service.upper()}_{name}", f"FACEGEN_{name}"):
        if key in os.environ:
            return int(os.environ[key])
    return default


class BodyLimit:
    def __init__(self, app, service: str, large: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit_from_env(service)
        self.large = large or {}

    def _limit_for(self, path: str) -> int:
        return next((v for prefix, v in self.large.items() if path.startswith(prefix)), self.limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self._limit_for(scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _refuse(send, 400, "Content-Length is not a number")
            if size > limit:
                return await _refuse(send, 413, f"the request body is {size} bytes; at most {limit} here")
            return await self.app(scope, receive, send)
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            return await self.app(scope, receive, send)
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge:
            return await _refuse(send, 413, f"the request body is over {limit} bytes; at most {limit} here")
        if body is None:
            return  # the client went away
        return await self.app(scope, replaying(body, receive), send)


class BodyTooLarge(ValueError):
    pass


async def read_body(receive, limit: int | None = None) -> bytes | None:
    """The whole body of an ASGI request (None when the client went away first); BodyTooLarge as
    soon as it passes `limit`."""
    chunks, total = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        total += len(chunks[-1])
        if limit is not None and total > limit:
            raise BodyTooLarge(limit)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive):
    """An ASGI `receive` that hands `body` (already read) to the app, then the connection's events."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "code": "INVALID_ARGUMENT"}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
