"""The reliability suite: a hostile-input corpus, generated here, sent to every route and method
of the five running services (127.0.0.1), and a service killed under load.

Every hostile input must get a clear refusal — HTTP 4xx with a JSON or text message, gRPC
INVALID_ARGUMENT — or a documented acceptance (an image in another colour mode is converted to
RGB and answered). Afterwards every service must still be ready, with the same worker processes
(nothing crashed and restarted). Hostile archives (zip-slip, links, devices, oversize entries,
file/folder clashes, bombs) and dataset paths have their own tests in test_filter_service.py;
overload shedding in test_pipeline.py.
"""

from __future__ import annotations

import io
import struct
import time
import zlib

import grpc
import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from services.core.proto import pb, rpc
from tests import servers


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height and whose data is a few bytes (a pixel bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def hostile_images() -> dict[str, tuple[bytes, bool]]:
    """name → (encoded bytes, accepted?): accepted ones are documented conversions."""
    face = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    good = _png(face)
    gif = io.BytesIO()
    face.save(gif, "GIF", save_all=True, append_images=[face.rotate(90)])
    return {
        "empty": (b"", False),
        "text": (b"hello, I am not an image\n" * 10, False),
        "corrupt": (b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, False),
        "truncated": (good[: len(good) // 2], False),
        "huge_dimensions": (_png_header(100_000, 100_000), False),
        "wide_strip": (_png_header(1_000_000, 1), False),
        "zero_size": (_png_header(0, 0), False),
        "grey_16bit": (_png(Image.fromarray(np.full((64, 64), 40000, np.uint16))), True),
        "cmyk_jpeg": (_jpeg_cmyk(face), True),
        "rgba": (_png(face.convert("RGBA")), True),
        "palette": (_png(face.convert("P")), True),
        "animated_gif": (gif.getvalue(), True),
    }


def _jpeg_cmyk(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


IMAGE_ROUTES = {  # service → (HTTP multipart routes, HTTP body routes, gRPC method and request builder)
    "filter": (["/classify"], ["/v1/classify"], ("FilterServiceStub", "Classify", pb.ClassifyRequest)),
    "attributes": (["/infer"], ["/v1/infer"], ("AttributeServiceStub", "Infer", pb.InferRequest)),
    "critic": (["/score", "/retouch"], ["/v1/score", "/v1/retouch"], ("CriticServiceStub", "Score", pb.ScoreRequest)),
}
GRPC_METHODS = ["/facegen.v1.FilterService/Classify", "/facegen.v1.FilterService/FilterDataset",
                "/facegen.v1.AttributeService/Infer", "/facegen.v1.SamplerService/Sample",
                "/facegen.v1.CriticService/Score", "/facegen.v1.CriticService/Retouch",
                "/facegen.v1.GenerationService/Generate", "/facegen.v1.GenerationService/GenerateStream"]
SERVICE_OF = {"Filter": "filter", "Attribute": "attributes", "Sampler": "sampler", "Critic": "critic", "Generation": "pipeline"}


def _workers(stack) -> dict[str, set[int]]:
    return {name: {p.pid for p in psutil.Process(s.proc.pid).children(recursive=True)} for name, s in stack.items()}


def _all_ready(stack) -> None:
    for name, s in stack.items():
        assert s.proc.poll() is None, f"{name} exited"
        assert httpx.get(f"{s.url}/readyz", timeout=5).status_code == 200, f"{name} is not ready"


def _clear_4xx(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    assert r.text.strip(), f"{what}: {r.status_code} with an empty body"


def test_hostile_images_get_clear_answers_on_every_image_route(stack):
    before = _workers(stack)
    for name, (data, accepted) in hostile_images().items():
        for svc, (multipart, body, (stub_name, method, request)) in IMAGE_ROUTES.items():
            url = stack[svc].url
            for route in multipart:
                r = httpx.post(url + route, files=[("images", (f"{name}.png", data))], timeout=60)
                if accepted:
                    assert r.status_code == 200, f"{svc}{route} {name}: {r.status_code} {r.text[:300]}"
                else:
                    _clear_4xx(r, f"{svc}{route} {name}")
            for route in body:
                r = httpx.post(url + route, content=data, headers={"content-type": "image/png"}, timeout=60)
                if accepted:
                    assert r.status_code == 200, f"{svc}{route} {name}: {r.status_code} {r.text[:300]}"
                else:
                    _clear_4xx(r, f"{svc}{route} {name}")
                    assert r.json()["code"] == "INVALID_ARGUMENT", f"{svc}{route} {name}: {r.text[:300]}"
            stub = getattr(rpc, stub_name)(grpc.insecure_channel(stack[svc].grpc_target))
            try:
                getattr(stub, method)(request(images=[pb.Image(encoded=data)]), timeout=60)
                assert accepted, f"{svc} {method} {name}: accepted"
            except grpc.RpcError as exc:
                assert not accepted and exc.code() == grpc.StatusCode.INVALID_ARGUMENT and exc.details(), \
                    f"{svc} {method} {name}: {exc.code()} {exc.details()}"
    # raw pixels that do not match their declared shape
    stub = rpc.FilterServiceStub(grpc.insecure_channel(stack["filter"].grpc_target))
    for raw in (pb.RawImage(pixels=b"\0" * 10, height=64, width=64), pb.RawImage(pixels=b"", height=0, width=0),
                pb.RawImage(pixels=b"\0" * 12, height=2**31, width=2**31)):
        with pytest.raises(grpc.RpcError) as err:
            stub.Classify(pb.ClassifyRequest(images=[pb.Image(raw=raw)]), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    _all_ready(stack)
    assert _workers(stack) == before


HOSTILE_JSON = [
    b"", b"{", b"null", b"[]", b'"a string"', b"{\"count\": " + b"9" * 400 + b"}",
    b'{"count": NaN}', b'{"count": Infinity}', b'{"count": -1}', b'{"count": "4"}', b'{"count": true}',
    b'{"count": 1.5}', b'{"seed": -5}', b'{"temperature": 1e309}', b'{"temperature": "hot"}',
    b'{"conditions": {"eyes": 2}}', b'{"conditions": {"eyes": {"min": 0.9, "max": 0.1}}}',
    b'{"conditions": {"nose": 0.5}}', b'{"conditions": [1, 2, 3]}', b'{"oversample": 1000}',
    b'{"unknown_field": 1}', b"[" * 5000 + b"]" * 5000, b'{"conditions": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2001,
    "{\"count\": 1, \"seed\": \"\u0000\"}".encode(), b"\xff\xfe\x00garbage",
]
JSON_ROUTES = [("pipeline", "/generate"), ("sampler", "/sample"), ("filter", "/filter_dataset"), ("filter", "/job_progress")]
# documented acceptances: an empty body to /generate is the request with every default ({}: one face)
ACCEPTED_JSON = {("pipeline", "/generate", b"")}


def test_hostile_json_gets_4xx_on_every_json_route(stack):
    before = _workers(stack)
    wrong = []
    for svc, route in JSON_ROUTES:
        for body in HOSTILE_JSON:
            r = httpx.post(stack[svc].url + route, content=body, headers={"content-type": "application/json"}, timeout=60)
            if (svc, route, body) in ACCEPTED_JSON:
                assert r.status_code == 200, (svc, route, body, r.text[:200])
            elif not (400 <= r.status_code < 500 and r.text.strip()):
                wrong.append((svc, route, body[:60], r.status_code, r.text[:200]))
    assert not wrong, wrong
    _all_ready(stack)
    assert _workers(stack) == before


def test_undecodable_protobuf_is_invalid_argument_on_every_method(stack):
    garbage = [b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f" + b"x" * 10, bytes(range(256)), b"\x08" + b"\x80" * 20]
    for method in GRPC_METHODS:
        svc = SERVICE_OF[method.split(".")[-1].split("/")[0].removesuffix("Service")]
        channel = grpc.insecure_channel(stack[svc].grpc_target)
        streaming = method.endswith(("FilterDataset", "GenerateStream"))
        call = (channel.unary_stream if streaming else channel.unary_unary)(method)
        for data in garbage:
            with pytest.raises(grpc.RpcError) as err:
                result = call(data, timeout=30)
                if streaming:
                    list(result)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, data[:10], err.value.code())
    _all_ready(stack)


def test_a_model_service_killed_under_load_fails_fast_and_the_pipeline_recovers(stack):
    """Chaos: the attributes service is killed while requests flow; the pipeline answers
    UNAVAILABLE naming it within a second (no request waits into its deadline: once the channel
    has failed, before drawing any face), and answers normally again once the service is back."""
    import concurrent.futures

    stub = rpc.GenerationServiceStub(grpc.insecure_channel(stack["pipeline"].grpc_target))
    # one candidate a face: requests drawing when the service dies must reach it well inside the
    # window after the kill, so that the window's last requests are the ones started after it
    req = pb.GenerateRequest(count=2, seed=3, oversample=1)
    victim = stack["attributes"]
    outcomes: list[tuple[str, float]] = []

    def one() -> None:
        t0 = time.monotonic()
        try:
            stub.Generate(req, timeout=20)
            outcomes.append(("OK", time.monotonic() - t0))
        except grpc.RpcError as exc:
            outcomes.append((exc.code().name + ": " + exc.details(), time.monotonic() - t0))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:  # load before the kill
            list(pool.map(lambda _: one(), range(4)))
        victim.stop(kill=True)
        killed_at = time.monotonic()
        end = killed_at + 3.0
        while time.monotonic() < end:  # load after it
            list(pool.map(lambda _: one(), range(4)))
    after = outcomes[-8:]
    assert all(o[0].startswith("UNAVAILABLE") and "attributes" in o[0] and o[1] < 1.0 for o in after), after
    stack["attributes"] = servers.start(victim.service, "attributes", http_port=victim.http_port,
                                        grpc_port=victim.grpc_port)
    deadline = time.monotonic() + 15
    while True:
        try:
            resp = stub.Generate(req, timeout=20)
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the pipeline did not recover after the service came back"
            time.sleep(0.25)
    assert len(resp.faces) == 2 and all(f.HasField("measured") for f in resp.faces)
