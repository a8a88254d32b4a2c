"""The generation playground: a static page at `/` of the pipeline's HTTP port that calls the
public HTTP API (POST /generate, POST /edit) from the browser, and nothing else.

An ASGI middleware rather than a mounted app: BentoML keeps `/` for its own index, and a
middleware answers before its router. GET /playground/config.json hands the page the API's
names and limits from the code that enforces them, so the page never restates them.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from pathlib import Path

STATIC = Path(__file__).with_name("playground")
INDEX = "index.html"


class Playground:
    def __init__(self, app, config: Callable[[], dict]) -> None:
        self.app, self.config = app, config
        self.files = {p.name: p for p in STATIC.iterdir() if p.is_file()}

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD") or not (
                path == "/" or path.startswith("/playground/")):
            await self.app(scope, receive, send)
            return
        name = INDEX if path == "/" else path.removeprefix("/playground/")
        if name == "config.json":
            body, kind = json.dumps(self.config()).encode(), "application/json"
        elif name in self.files:  # only the shipped files by name: no path ever reaches the disk
            body = self.files[name].read_bytes()
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        else:
            body, kind = json.dumps({"error": f"no page {path}", "code": "NOT_FOUND"}).encode(), "application/json"
            await _send(send, 404, kind, body, scope)
            return
        await _send(send, 200, kind, body, scope)


async def _send(send, status: int, kind: str, body: bytes, scope) -> None:
    charset = "; charset=utf-8" if kind.startswith("text/") or kind.endswith(("json", "javascript")) else ""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", (kind + charset).encode()), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-cache")]})
    await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})
