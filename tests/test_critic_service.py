"""CriticService end to end on free 127.0.0.1 ports: Score and Retouch over HTTP and gRPC agree
with the exported graphs run in-process, and bad input gets clear errors."""

from __future__ import annotations

import base64
import io

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from services.core.exports import load_session
from services.core.proto import pb, rpc
from services.shared.images import decode, fit
from tests import servers

EXPORTS = servers.REPO / "exports"


@pytest.fixture(scope="module")
def server():
    s = servers.start("services.critic.service:CriticService", "critic")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def generated():
    """Faces from the shipped generator: what the critic and the refiner exist for."""
    _, session, _ = load_session(EXPORTS / "generator" / "1")
    feeds = {"conditions": np.full((4, 5), 0.5, np.float32), "temperature": np.array(0.8, np.float32)}
    rng = np.random.default_rng(0)
    for i in session.get_inputs():
        if i.name.startswith("noise_"):
            feeds[i.name] = rng.standard_normal((4, *i.shape[1:]), dtype=np.float32)
    return session.run(["images"], feeds)[0]


def _run(name: str, images: np.ndarray) -> list[np.ndarray]:
    _, session, _ = load_session(EXPORTS / name / "1")
    return session.run(None, {"images": images})


def test_score_over_http_and_grpc_matches_the_export(server, generated, synth_root):
    real = np.stack([fit(decode(f.read_bytes()), 64, 64) for f in sorted(synth_root.rglob("*.png"))[:4]])
    batch = np.concatenate([real, generated])
    want_r, want_map = _run("critic", batch)
    pngs = [_png(x) for x in batch]
    r = httpx.post(f"{server.url}/score", files=[("images", (f"{i}.png", p)) for i, p in enumerate(pngs)], timeout=30)
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    np.testing.assert_allclose([s["realness"] for s in scores], want_r, atol=1e-5)
    # the proto's RealnessMap on both transports: size × size values, row-major
    maps = [np.reshape(s["realness_map"]["values"], (s["realness_map"]["size"],) * 2) for s in scores]
    np.testing.assert_allclose(maps, want_map, atol=1e-4)
    with grpc.insecure_channel(server.grpc_target) as ch:
        resp = rpc.CriticServiceStub(ch).Score(pb.ScoreRequest(images=[pb.Image(encoded=p) for p in pngs]))
    np.testing.assert_allclose([s.realness for s in resp.scores], want_r, atol=1e-5)
    m = resp.scores[0].realness_map
    np.testing.assert_allclose(np.reshape(m.values, (m.size, m.size)), want_map[0], atol=1e-5)
    assert resp.model.name == "critic" and resp.model.provider


def test_retouch_returns_the_refiner_output_and_realness_before_after(server, generated):
    (want,) = _run("refiner", generated)
    want_after, _ = _run("critic", want)
    want_before, _ = _run("critic", generated)
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = rpc.CriticServiceStub(ch)
        raw = [pb.Image(raw=pb.RawImage(pixels=x.tobytes(), height=64, width=64)) for x in generated]
        resp = stub.Retouch(pb.RetouchRequest(images=raw, raw_output=True))
        png = stub.Retouch(pb.RetouchRequest(images=raw[:1]))
    got = np.stack([np.frombuffer(f.image.raw.pixels, np.uint8).reshape(64, 64, 3) for f in resp.faces])
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, generated), "the shipped refiner left every generated face untouched"
    np.testing.assert_allclose([f.before.realness for f in resp.faces], want_before, atol=1e-5)
    np.testing.assert_allclose([f.after.realness for f in resp.faces], want_after, atol=1e-5)
    np.testing.assert_array_equal(decode(png.faces[0].image.encoded), want[0])
    assert resp.refiner.name == "refiner"

    r = httpx.post(f"{server.url}/v1/retouch", content=_png(generated[0]), timeout=30)
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    np.testing.assert_array_equal(decode(base64.b64decode(face["image"]["encoded"])), want[0])
    assert face["before"]["realness"] == pytest.approx(float(want_before[0]), abs=1e-5)


def test_bad_inputs_get_clear_errors(server):
    for route in ("score", "retouch"):
        r = httpx.post(f"{server.url}/{route}", files=[("images", ("x.png", b"not an image"))])
        assert r.status_code == 400 and r.json()["code"] == "INVALID_ARGUMENT" and r.json()["error"]
    r = httpx.post(f"{server.url}/v1/score", content=b"\x89PNG\r\n\x1a\n broken")
    assert r.status_code == 400 and r.json()["error"]
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = rpc.CriticServiceStub(ch)
        for call, req in ((stub.Score, pb.ScoreRequest()), (stub.Retouch, pb.RetouchRequest()),
                          (stub.Retouch, pb.RetouchRequest(images=[pb.Image(raw=pb.RawImage(pixels=b"1", height=1, width=1))]))):
            with pytest.raises(grpc.RpcError) as err:
                call(req)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details()
    status = httpx.get(f"{server.url}/v1/status").json()
    assert status["ready"] and status["refiner"]["name"] == "refiner"
    text = httpx.get(f"{server.url}/metrics").text
    assert 'service="critic"' in text and 'service="refiner"' in text and 'method="Retouch"' in text


def _png(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="PNG")
    return buf.getvalue()
