"""AttributeService end to end on free 127.0.0.1 ports."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest

from services.core.exports import load_session, run_images
from services.core.proto import pb, rpc
from services.shared.images import decode, fit
from tests import servers

EXPORT = servers.REPO / "exports" / "attributes" / "1"


@pytest.fixture(scope="module")
def server():
    s = servers.start("services.attributes.service:AttributeService", "attributes")
    yield s
    s.stop()


def test_http_and_grpc_agree_with_in_process_onnx(server, synth_root, real_root):
    files = sorted(synth_root.rglob("*.png"))[:5] + sorted(real_root.rglob("*.jpg"))[:3]
    export, session, _ = load_session(EXPORT)
    want = run_images(session, export, np.stack([fit(decode(f.read_bytes()), 64, 64) for f in files]))["conditions"]
    names = export.signature["conditions"]

    r = httpx.post(f"{server.url}/infer", files=[("images", (f.name, f.read_bytes())) for f in files], timeout=30)
    assert r.status_code == 200, r.text
    got = np.array([[row[c] for c in names] for row in r.json()["conditions"]])
    np.testing.assert_allclose(got, want, atol=1e-5)

    r = httpx.post(f"{server.url}/v1/infer", content=files[0].read_bytes())
    np.testing.assert_allclose([r.json()["conditions"][0][c] for c in names], want[0], atol=1e-5)

    with grpc.insecure_channel(server.grpc_target) as ch:
        resp = rpc.AttributeServiceStub(ch).Infer(pb.InferRequest(images=[pb.Image(encoded=f.read_bytes()) for f in files]))
    got = np.array([[getattr(c, n) for n in names] for c in resp.conditions])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert resp.model.name == "attributes"


def test_bad_inputs_get_clear_errors(server):
    for data in (b"", b"not an image", b"\x89PNG\r\n\x1a\n broken"):
        r = httpx.post(f"{server.url}/infer", files=[("images", ("x.png", data))])
        assert r.status_code == 400 and r.json()["code"] == "INVALID_ARGUMENT" and r.json()["error"]
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = rpc.AttributeServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Infer(pb.InferRequest(images=[pb.Image(raw=pb.RawImage(pixels=b"12", height=2, width=2))]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 12 bytes" in err.value.details()
        ok = stub.Infer(pb.InferRequest(images=[pb.Image(raw=pb.RawImage(pixels=bytes(12), height=2, width=2))]))
        assert len(ok.conditions) == 1
    text = httpx.get(f"{server.url}/metrics").text
    assert 'service="attributes"' in text and 'transport="grpc"' in text and 'transport="http"' in text
