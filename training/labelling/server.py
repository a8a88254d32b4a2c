"""The labelling page's HTTP server (Starlette): the page, the sheet's images by index (never
a path from the request, so nothing outside the dataset folder is served), and saving a label.

    GET  /                      the page (static/label.html)
    GET  /static/<name>         its script and style, by name
    GET  /api/sheet             the sheet: every image with its label or suggestion
    GET  /api/image/<index>     image <index> of the sheet as PNG
    POST /api/label/<index>     {"values": {condition: value}} → saved at once
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from services.shared.conditions import CONDITIONS, MEANING
from services.shared.images import InvalidImage, read
from training.labelling.sheet import Sheet

STATIC = Path(__file__).with_name("static")


def make_app(sheet: Sheet) -> Starlette:
    static = {p.name: p for p in STATIC.iterdir() if p.is_file()}

    async def page(_: Request) -> Response:
        return FileResponse(static["label.html"], headers={"cache-control": "no-cache"})

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return _error(404, f"no file {name}")
        return FileResponse(static[name], headers={"cache-control": "no-cache"})

    async def sheet_state(_: Request) -> Response:
        labelled = sheet.labelled()
        items = [{"index": it.index, "file": it.record.file, "values": labelled.get(it.record.file),
                  "suggested": it.suggested, "sources": it.sources} for it in sheet.items]
        return JSONResponse({"conditions": list(CONDITIONS), "meaning": MEANING, "items": items,
                             "labelled": len(labelled), "total": len(items), "csv": str(sheet.path)})

    def _index(request: Request) -> int:
        index = request.path_params["index"]
        if not 0 <= index < len(sheet.items):
            raise IndexError(f"no image {index} on this sheet of {len(sheet.items)}")
        return index

    async def image(request: Request) -> Response:
        try:
            rgb = read(sheet.items[_index(request)].record.path)
        except IndexError as exc:
            return _error(404, str(exc))
        except InvalidImage as exc:
            return _error(422, f"this image cannot be read: {exc}")
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    async def save(request: Request) -> Response:
        try:
            index = _index(request)
        except IndexError as exc:
            return _error(404, str(exc))
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "send JSON: {\"values\": {condition: number in [0, 1]}}")
        if not isinstance(body, dict) or not isinstance(body.get("values"), dict) or set(body) != {"values"}:
            return _error(400, "send JSON: {\"values\": {condition: number in [0, 1]}}")
        try:
            labelled = sheet.save(index, body["values"])
        except ValueError as exc:
            return _error(400, str(exc))
        return JSONResponse({"index": index, "values": labelled[sheet.items[index].record.file],
                             "labelled": len(labelled), "total": len(sheet.items)})

    return Starlette(routes=[
        Route("/", page), Route("/static/{name}", static_file), Route("/api/sheet", sheet_state),
        Route("/api/image/{index:int}", image), Route("/api/label/{index:int}", save, methods=["POST"]),
    ])


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
