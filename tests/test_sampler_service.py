"""SamplerService end to end, on the tests' tiny two-stage generator export (free 127.0.0.1 ports)."""

from __future__ import annotations

import base64
import io

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from services.core.proto import pb, rpc
from tests import servers


@pytest.fixture(scope="module")
def server(two_stage):
    """The sampler on the tests' tiny two-stage export (the shipped design)."""
    export = two_stage / "exports" / "generator" / "1"
    s = servers.start("services.sampler.service:SamplerService", "sampler",
                      env={"FACEGEN_SAMPLER_EXPORT": str(export), "FACEGEN_SAMPLER_MAX_IMAGES_PER_REQUEST": "32",
                           "FACEGEN_SAMPLER_MAX_BODY_BYTES": "512"})
    yield s
    s.stop()


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_same_seed_same_faces_on_both_transports(server):
    body = {"conditions": [{"eyes": 0.9, "mouth": 0.2, "hair_color": 0.1, "background": 0.7, "head": 0.5}],
            "count": 3, "seed": 42, "temperature": 0.7}
    a = httpx.post(f"{server.url}/sample", json=body, timeout=60).json()
    b = httpx.post(f"{server.url}/sample", json=body, timeout=60).json()
    assert [f["png"] for f in a["faces"]] == [f["png"] for f in b["faces"]]
    assert [f["seed"] for f in a["faces"]] == [42, 43, 44] and a["temperature"] == pytest.approx(0.7)
    http_faces = [_png(base64.b64decode(f["png"])) for f in a["faces"]]
    assert http_faces[0].shape == (64, 64, 3) and not np.array_equal(http_faces[0], http_faces[1])
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = rpc.SamplerServiceStub(ch)
        cond = pb.Conditions(eyes=0.9, mouth=0.2, hair_color=0.1, background=0.7, head=0.5)
        resp = stub.Sample(pb.SampleRequest(conditions=[cond], count=3, seed=42, temperature=0.7))
        for face, ref in zip(resp.faces, http_faces, strict=True):
            assert np.array_equal(_png(face.png), ref)
        # a face can be redrawn alone from its own seed
        alone = stub.Sample(pb.SampleRequest(conditions=[cond], count=1, seed=43, temperature=0.7))
        assert np.array_equal(_png(alone.faces[0].png), http_faces[1])
        other = stub.Sample(pb.SampleRequest(conditions=[cond], count=1, seed=7, temperature=0.7))
        assert not np.array_equal(_png(other.faces[0].png), http_faces[0])
        # raw pixels (what the pipeline asks for) are the same faces, without the PNG
        raw = stub.Sample(pb.SampleRequest(conditions=[cond], count=3, seed=42, temperature=0.7, raw_output=True))
        for face, ref in zip(raw.faces, http_faces, strict=True):
            assert not face.png and (face.raw.height, face.raw.width) == (64, 64)
            assert np.array_equal(np.frombuffer(face.raw.pixels, np.uint8).reshape(64, 64, 3), ref)


def test_a_condition_left_out_means_the_same_on_both_transports(server):
    """Left out, a condition is 0.5 over HTTP and over gRPC (gRPC read proto3's 0.0: a head turned left)."""
    body = {"conditions": [{"eyes": 0.9}], "count": 2, "seed": 5}
    http = httpx.post(f"{server.url}/sample", json=body, timeout=60).json()
    explicit = httpx.post(f"{server.url}/sample", json={**body, "conditions": [
        {"eyes": 0.9, "mouth": 0.5, "hair_color": 0.5, "background": 0.5, "head": 0.5}]}, timeout=60).json()
    assert [f["png"] for f in http["faces"]] == [f["png"] for f in explicit["faces"]]
    with grpc.insecure_channel(server.grpc_target) as ch:
        resp = rpc.SamplerServiceStub(ch).Sample(pb.SampleRequest(conditions=[pb.Conditions(eyes=0.9)], count=2, seed=5))
    assert [f.conditions.head for f in resp.faces] == [0.5, 0.5]
    for face, ref in zip(resp.faces, http["faces"], strict=True):
        assert np.array_equal(_png(face.png), _png(base64.b64decode(ref["png"])))


def test_bodies_over_the_limit_and_loose_types_are_refused(server):
    """A body over the limit is 413 before it is read (a declared length, or a chunked body);
    `"count": true` is a type error, not one face."""
    r = httpx.post(f"{server.url}/sample", content=b"x" * 1024, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "at most 512" in r.json()["error"], r.text

    def chunks():
        for _ in range(4):
            yield b" " * 300

    r = httpx.post(f"{server.url}/sample", content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413, r.text
    body = {"conditions": [{"eyes": 0.5}], "seed": 1}
    r = httpx.post(f"{server.url}/sample", json={**body, "count": True}, timeout=30)
    assert r.status_code == 400 and "count" in r.text, r.text
    small = httpx.post(f"{server.url}/sample", json={**body, "count": 1}, timeout=30)
    assert small.status_code == 200 and len(small.json()["faces"]) == 1


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"temperature": -0.5}, "temperature"),
        ({"count": 33}, "exceeds the maximum"),
        ({"conditions": [{"eyes": 1.5}]}, "eyes"),
        ({"conditions": [{"eyes": 0.5}, {"eyes": 0.5}], "count": 3}, "2 conditions for 3 faces"),
        ({"conditions": []}, "at least one"),
    ],
)
def test_bad_requests_are_refused_over_http(server, change, needle):
    body = {"conditions": [{"eyes": 0.5}], "count": 1, "seed": 1, **change}
    r = httpx.post(f"{server.url}/sample", json=body, timeout=30)
    assert r.status_code == 400 and needle in r.text, r.text


def test_bad_requests_are_refused_over_grpc(server):
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = rpc.SamplerServiceStub(ch)
        for req, needle in [
            (pb.SampleRequest(conditions=[pb.Conditions(eyes=float("nan"))], count=1), "eyes=nan"),
            (pb.SampleRequest(conditions=[pb.Conditions(head=float("inf"))], count=1), "head=inf"),
            (pb.SampleRequest(conditions=[pb.Conditions(mouth=-0.1)], count=1), "mouth="),
            (pb.SampleRequest(conditions=[pb.Conditions()], count=1000), "exceeds the maximum"),
            (pb.SampleRequest(conditions=[pb.Conditions()], count=1, temperature=-1.0), "temperature"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                stub.Sample(req, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in err.value.details(), err.value.details()
        assert len(stub.Sample(pb.SampleRequest(conditions=[pb.Conditions()], count=2)).faces) == 2
