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
    # uint64 in the proto: decimal strings in its JSON, exact in any client; a request takes them back
    assert [f["seed"] for f in a["faces"]] == ["42", "43", "44"] and a["temperature"] == pytest.approx(0.7)
    again = httpx.post(f"{server.url}/sample", json={**body, "count": 1, "seed": a["faces"][1]["seed"]}, timeout=60).json()
    assert again["faces"][0]["png"] == a["faces"][1]["png"]
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
    # the same PNG bytes, whichever session ran each batch (a lone session is kept only for batch
    # sizes where it answers bitwise as the lanes do)
    assert [f["png"] for f in http["faces"]] == [g["png"] for g in explicit["faces"]]
    with grpc.insecure_channel(server.grpc_target) as ch:
        resp = rpc.SamplerServiceStub(ch).Sample(pb.SampleRequest(conditions=[pb.Conditions(eyes=0.9)], count=2, seed=5))
    assert [f.conditions.head for f in resp.faces] == [0.5, 0.5]
    assert [f.png for f in resp.faces] == [base64.b64decode(f["png"]) for f in http["faces"]]


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


def _conditions(**kw) -> pb.Conditions:
    return pb.Conditions(**{"eyes": 0.5, "mouth": 0.5, "hair_color": 0.5, "background": 0.5, "head": 0.5, **kw})


def test_edit_redraws_a_face_with_its_own_latents_and_the_target_conditions(server, two_stage):
    """Edit = the encoder export's latents of the face (for the measured conditions) redrawn with the
    target ones at temperature 1 by the redraw export (the sampler without its refinement): checked
    against the two ONNX graphs run here; a target left out keeps the measured value; fewer kept
    groups draw the rest from the seed."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    measured = [_conditions(eyes=0.2), _conditions(eyes=0.8, head=0.3)]
    target = [pb.Conditions(eyes=0.9), pb.Conditions(hair_color=0.1)]
    images = [pb.Image(raw=pb.RawImage(pixels=f.tobytes(), height=64, width=64)) for f in faces]
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = rpc.SamplerServiceStub(ch)
        resp = stub.Edit(pb.EditRequest(images=images, measured=measured, target=target, seed=3, raw_output=True))
        again = stub.Edit(pb.EditRequest(images=images, measured=measured, target=target, seed=3, raw_output=True))
        free = stub.Edit(pb.EditRequest(images=images, measured=measured, target=target, seed=3, keep_groups=0,
                                        raw_output=True))
    got = [np.frombuffer(f.raw.pixels, np.uint8).reshape(64, 64, 3) for f in resp.faces]
    got = [np.frombuffer(f.raw.pixels, np.uint8).reshape(64, 64, 3) for f in resp.faces]
    # the same edit again: the same faces (to 1/255: a batch may run on the lane or the lone session,
    # whose float sums differ in order)
    redo = [np.frombuffer(f.raw.pixels, np.uint8).reshape(64, 64, 3) for f in again.faces]
    assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(got, redo, strict=True)) <= 1
    assert resp.faces[0].conditions.eyes == pytest.approx(0.9) and resp.faces[0].conditions.head == pytest.approx(0.5)
    assert resp.faces[1].conditions.hair_color == pytest.approx(0.1) and resp.faces[1].conditions.head == pytest.approx(0.3)
    assert resp.latent_groups >= 2
    names = ("eyes", "mouth", "hair_color", "background", "head")
    m = np.array([[getattr(c, n) for n in names] for c in measured], np.float32)
    t = np.array([[getattr(f.conditions, n) for n in names] for f in resp.faces], np.float32)
    enc = ort.InferenceSession(str(two_stage / "exports" / "encoder" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    noise = enc.run(None, {"images": faces, "conditions": m})
    feeds = {"conditions": t, "temperature": np.array(1.0, np.float32), **{f"noise_{g}": z for g, z in enumerate(noise)}}
    want, refined = (ort.InferenceSession(str(two_stage / "exports" / kind / "1" / "model.onnx"),
                                          providers=["CPUExecutionProvider"]).run(["images"], feeds)[0]
                     for kind in ("redraw", "generator"))
    assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(got, want, strict=True)) <= 1
    assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(got, refined, strict=True)) > 1
    assert any(f.raw.pixels != g.raw.pixels for f, g in zip(free.faces, resp.faces, strict=True))


@pytest.mark.parametrize("change, needle", [
    ({"measured": [pb.Conditions(eyes=0.5)]}, "need all of"),
    ({"target": []}, "target conditions"),
    ({"keep_groups": 99}, "keep_groups must be in"),
    ({"measured": [_conditions(eyes=1.5)]}, "in [0, 1]"),
    ({"images": [pb.Image(encoded=b"not an image")]}, "image"),
    ({"images": []}, "no images"),
])
def test_bad_edits_are_invalid_argument(server, change, needle):
    face = np.zeros((64, 64, 3), np.uint8)
    base = dict(images=[pb.Image(raw=pb.RawImage(pixels=face.tobytes(), height=64, width=64))],
                measured=[_conditions()], target=[pb.Conditions(eyes=0.9)])
    with grpc.insecure_channel(server.grpc_target) as ch, pytest.raises(grpc.RpcError) as err:
        rpc.SamplerServiceStub(ch).Edit(pb.EditRequest(**{**base, **change}), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in err.value.details(), err.value.details()


def test_a_sampler_without_a_redraw_export_edits_through_its_own_graph(two_stage, tmp_path):
    """An export written before the redraw existed (its sampler had no refinement to skip) still edits."""
    import onnxruntime as ort

    s = servers.start("services.sampler.service:SamplerService", "sampler",
                      env={"FACEGEN_SAMPLER_EXPORT": str(two_stage / "exports" / "generator" / "1"),
                           "FACEGEN_REDRAW_EXPORT": str(tmp_path / "none")})
    face = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    try:
        with grpc.insecure_channel(s.grpc_target) as ch:
            resp = rpc.SamplerServiceStub(ch).Edit(pb.EditRequest(
                images=[pb.Image(raw=pb.RawImage(pixels=face.tobytes(), height=64, width=64))],
                measured=[_conditions()], target=[_conditions(eyes=0.9)], raw_output=True), timeout=60)
    finally:
        s.stop()
    enc = ort.InferenceSession(str(two_stage / "exports" / "encoder" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    gen = ort.InferenceSession(str(two_stage / "exports" / "generator" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    noise = enc.run(None, {"images": face[None], "conditions": np.full((1, 5), 0.5, np.float32)})
    target = np.array([[0.9, 0.5, 0.5, 0.5, 0.5]], np.float32)
    want = gen.run(["images"], {"conditions": target, "temperature": np.array(1.0, np.float32),
                                **{f"noise_{g}": z for g, z in enumerate(noise)}})[0][0]
    got = np.frombuffer(resp.faces[0].raw.pixels, np.uint8).reshape(64, 64, 3)
    assert np.abs(got.astype(int) - want).max() <= 1


def test_a_sampler_without_an_encoder_samples_and_says_why_it_cannot_edit(two_stage, tmp_path):
    s = servers.start("services.sampler.service:SamplerService", "sampler",
                      env={"FACEGEN_SAMPLER_EXPORT": str(two_stage / "exports" / "generator" / "1"),
                           "FACEGEN_ENCODER_EXPORT": str(tmp_path / "none")})
    try:
        with grpc.insecure_channel(s.grpc_target) as ch:
            stub = rpc.SamplerServiceStub(ch)
            assert len(stub.Sample(pb.SampleRequest(conditions=[_conditions()], count=1)).faces) == 1
            face = np.zeros((64, 64, 3), np.uint8)
            with pytest.raises(grpc.RpcError) as err:
                stub.Edit(pb.EditRequest(images=[pb.Image(raw=pb.RawImage(pixels=face.tobytes(), height=64, width=64))],
                                         measured=[_conditions()], target=[pb.Conditions()]), timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "no usable encoder export" in err.value.details()
    finally:
        s.stop()
