"""FilterService end to end: real `bentoml serve` processes on free 127.0.0.1 ports."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import shutil
import tarfile
import time
import zipfile
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from services.core.exports import load_session, run_images
from services.core.grpc_server import port_is_free
from services.core.proto import pb, rpc
from services.shared.images import decode, fit
from tests import servers

EXPORT = servers.REPO / "exports" / "filter" / "1"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, synth_root, real_root):
    """An allowed root holding the procedural set (with corrupt files) and the real photos."""
    root = tmp_path_factory.mktemp("allowed")
    shutil.copytree(synth_root, root / "synth")
    (root / "synth" / "unlabeled" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "synth" / "Female" / "notes.txt").write_text("not an image")
    shutil.copytree(real_root, root / "real")
    return root


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def server(datasets, jobs):
    s = servers.start("services.filter.service:FilterService", "filter",
                      env={"FACEGEN_ALLOWED_ROOTS": str(datasets), "FACEGEN_JOBS_DIR": str(jobs)})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield rpc.FilterServiceStub(ch)


def _files(root: Path, n: int) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg"))[:n]


def test_http_and_grpc_agree_with_in_process_onnx(server, stub, datasets):
    files = _files(datasets / "synth", 6) + _files(datasets / "real", 6)
    export, session, _ = load_session(EXPORT)
    want = run_images(session, export, np.stack([fit(decode(f.read_bytes()), 64, 64) for f in files]))["p_female"]

    r = httpx.post(f"{server.url}/classify", files=[("images", (f.name, f.read_bytes())) for f in files], timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["p_female"], want, atol=1e-5)

    got = stub.Classify(pb.ClassifyRequest(images=[pb.Image(encoded=f.read_bytes()) for f in files]), timeout=30)
    np.testing.assert_allclose(list(got.p_female), want, atol=1e-5)
    assert got.model.name == "filter" and got.model.provider == "CPUExecutionProvider"

    raw = np.stack([fit(decode(f.read_bytes()), 64, 64) for f in files[:3]])
    got = stub.Classify(pb.ClassifyRequest(images=[pb.Image(raw=pb.RawImage(pixels=x.tobytes(), height=64, width=64))
                                                   for x in raw]))
    np.testing.assert_allclose(list(got.p_female), want[:3], atol=1e-5)
    r = httpx.post(f"{server.url}/classify_raw", files={"pixels": ("x", raw.tobytes())}, data={"height": 64, "width": 64})
    np.testing.assert_allclose(r.json()["p_female"], want[:3], atol=1e-5)
    # the body-only route: one encoded image, or raw pixels with their shape in headers
    r = httpx.post(f"{server.url}/v1/classify", content=files[0].read_bytes(), headers={"content-type": "image/png"})
    np.testing.assert_allclose(r.json()["p_female"], want[:1], atol=1e-5)
    headers = {"content-type": "application/octet-stream", "x-height": "64", "x-width": "64"}
    r = httpx.post(f"{server.url}/v1/classify", content=raw.tobytes(), headers=headers)
    np.testing.assert_allclose(r.json()["p_female"], want[:3], atol=1e-5)
    r = httpx.post(f"{server.url}/v1/classify", content=raw.tobytes()[:-1], headers=headers)
    assert r.status_code == 400 and "whole number" in r.json()["error"]


def test_health_reflection_and_status(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.grpc_target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        resp = health.Check(health_pb2.HealthCheckRequest(service="facegen.v1.FilterService"))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        answer = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
        assert {"facegen.v1.FilterService", "grpc.health.v1.Health"} <= names
    status = httpx.get(f"{server.url}/v1/status").json()
    assert status["ready"] and status["model"]["provider"] == "CPUExecutionProvider"
    assert httpx.get(f"{server.url}/readyz").status_code == 200


BAD_INPUTS = {
    "corrupt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR garbage garbage",
    "empty": b"",
    "not an image": b"%PDF-1.4 hello",
}


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()[:300]


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buf, "PNG")  # a few KB that would decode to 400 MP
    return buf.getvalue()


@pytest.mark.parametrize("kind", [*BAD_INPUTS, "truncated", "huge"])
def test_bad_images_get_clear_errors_and_the_service_keeps_serving(server, stub, kind):
    data = {"truncated": _truncated_png, "huge": _huge_png}.get(kind, lambda: BAD_INPUTS[kind])()
    r = httpx.post(f"{server.url}/classify", files=[("images", ("x.png", data))], timeout=30)
    assert r.status_code == 400 and r.json()["code"] == "INVALID_ARGUMENT" and r.json()["error"], r.text
    r = httpx.post(f"{server.url}/v1/classify", content=data, timeout=30)
    assert r.status_code == 400 and r.json()["code"] == "INVALID_ARGUMENT" and r.json()["error"], r.text
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(pb.ClassifyRequest(images=[pb.Image(encoded=data)]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details()
    ok = stub.Classify(pb.ClassifyRequest(images=[pb.Image(raw=pb.RawImage(pixels=bytes(12288), height=64, width=64))]))
    assert len(ok.p_female) == 1


def test_bad_requests_over_grpc(stub):
    for req, needle in [
        (pb.ClassifyRequest(), "no images"),
        (pb.ClassifyRequest(images=[pb.Image()]), "neither"),
        (pb.ClassifyRequest(images=[pb.Image(raw=pb.RawImage(pixels=b"12", height=1, width=1))]), "needs 3 bytes"),
        (pb.ClassifyRequest(images=[pb.Image(raw=pb.RawImage(pixels=b"", height=0, width=5))]), "empty"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.Classify(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in err.value.details()


def test_metrics_cover_both_transports(server, stub):
    stub.Classify(pb.ClassifyRequest(images=[pb.Image(raw=pb.RawImage(pixels=bytes(12288), height=64, width=64))]))
    text = httpx.get(f"{server.url}/metrics").text
    for needle in ('transport="grpc"', 'transport="http"', "facegen_batch_size_bucket", "facegen_queue_depth",
                   'facegen_model_info{', "facegen_images_total", "bentoml_service_request_total"):
        assert needle in text, needle


def test_dataset_outside_allowed_roots_is_refused(server, stub, tmp_path):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.FilterDataset(pb.FilterDatasetRequest(dataset=str(tmp_path)), timeout=30))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "allowed" in err.value.details()
    status, result = _task(server, "filter_dataset", dataset="/etc")
    assert status == "failed"
    assert result.status_code == 403 and "allowed" in result.json()["error"], result.text


def test_links_out_of_the_dataset_are_not_followed(stub, datasets, tmp_path):
    """A symlink inside an allowed folder that leads out of it is refused unread, with one reason
    whether its target exists (an image elsewhere, /etc/shadow) or not; links inside are followed;
    a file too big to be an image is refused before it is read; a NUL byte in the path is the
    caller's error (was INTERNAL)."""
    root = datasets / "links"
    (root / "Female").mkdir(parents=True)
    face = next((datasets / "synth" / "Female").glob("*.png"))
    shutil.copy(face, root / "Female" / "ok.png")
    outside = tmp_path / "outside.png"
    shutil.copy(face, outside)
    (root / "Female" / "inside.png").symlink_to(root / "Female" / "ok.png")
    (root / "Female" / "outside.png").symlink_to(outside)
    (root / "Female" / "shadow.png").symlink_to("/etc/shadow")
    (root / "Female" / "missing.png").symlink_to(tmp_path / "no-such.png")
    (root / "Female" / "loop.png").symlink_to(root / "Female" / "loop.png")
    (root / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    with (root / "Female" / "huge.png").open("wb") as fh:  # sparse: 21 MiB declared, never read
        fh.truncate(21 * 2**20)
    events = list(stub.FilterDataset(pb.FilterDatasetRequest(dataset=str(root), threshold=0.5), timeout=60))
    by = {e.decision.file: e.decision for e in events if e.WhichOneof("event") == "decision"}
    assert by["Female/ok.png"].HasField("p_female") and by["Female/inside.png"].HasField("p_female")
    for name in ("outside", "shadow", "missing", "loop"):
        d = by[f"Female/{name}.png"]
        assert d.reason == "unreadable: a link that leads outside the dataset" and not d.HasField("p_female"), d
    assert not any(f.startswith("elsewhere") for f in by)
    assert "an image is at most" in by["Female/huge.png"].reason
    with pytest.raises(grpc.RpcError) as err:
        list(stub.FilterDataset(pb.FilterDatasetRequest(dataset=str(root) + "\x00x"), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "NUL" in err.value.details()


def test_big_requests_are_refused_before_decoding(server, stub):
    """The count and the pixels images declare are checked before anything is decoded: 32 one-colour
    8000×5000 PNGs (4 MB of request, 3.8 GB decoded) are refused at once (they took 21 s and 3.5 GB),
    as over HTTP; one such image alone is still served."""
    buf = io.BytesIO()
    Image.new("RGB", (8000, 5000), (90, 120, 150)).save(buf, format="PNG")
    big = pb.Image(encoded=buf.getvalue())
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(pb.ClassifyRequest(images=[big] * 32), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pixels" in err.value.details()
    files = [("images", (f"{i}.png", buf.getvalue(), "image/png")) for i in range(32)]
    r = httpx.post(f"{server.url}/classify", files=files, timeout=60)
    assert r.status_code == 400 and "pixels" in r.text, r.text
    tiny = pb.Image(raw=pb.RawImage(pixels=bytes(3), height=1, width=1))
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(pb.ClassifyRequest(images=[tiny] * 257), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 256" in err.value.details()
    assert len(stub.Classify(pb.ClassifyRequest(images=[big]), timeout=60).p_female) == 1


@pytest.mark.parametrize("method", ["Classify", "FilterDataset"])
def test_undecodable_protobuf_is_invalid_argument(server, method):
    """Bytes that are not the method's message are the caller's error (was UNKNOWN), and the
    service keeps serving."""
    with grpc.insecure_channel(server.grpc_target) as ch:
        path = f"/facegen.v1.FilterService/{method}"
        call = ch.unary_unary(path) if method == "Classify" else ch.unary_stream(path)
        with pytest.raises(grpc.RpcError) as err:
            result = call(b"\xff\xff\xff\xff", timeout=10)
            if method == "FilterDataset":
                list(result)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid protobuf" in err.value.details()
        grey = pb.Image(raw=pb.RawImage(pixels=bytes([128]) * (64 * 64 * 3), height=64, width=64))
        answer = rpc.FilterServiceStub(ch).Classify(pb.ClassifyRequest(images=[grey]), timeout=10)
        assert len(answer.p_female) == 1 and 0.0 <= answer.p_female[0] <= 1.0


def test_http_task_failures_say_what_was_wrong(server, datasets, jobs, tmp_path):
    """A task fails after its submit was accepted; its result must still say why, as a 4xx."""
    cases = [({"dataset": str(datasets / "no-such-set")}, 400, "not found"),
             ({"dataset": str(datasets / "real"), "threshold": 1.5}, 400, "threshold"),
             ({"dataset": str(datasets / "real"), "job_id": "../escape"}, 400, "job_id")]
    for body, status, words in cases:
        got, result = _task(server, "filter_dataset", **body)
        assert got == "failed", body
        assert result.status_code == status and words in result.json()["error"], (body, result.text)
    # an uploaded archive's job_id names the folder it is unpacked into (and later removed from)
    archive = tmp_path / "ds.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Female/a.png", b"x")
    victim = tmp_path / "victim" / "data"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("mine")
    escape = os.path.relpath(victim.parent, jobs)
    status, result = _task(server, "filter_archive", archive, job_id=escape)
    assert status == "failed"
    assert result.status_code == 400 and "job_id" in result.json()["error"], result.text
    assert (victim / "keep.txt").read_text() == "mine" and not (victim / "Female").exists()
    # a refused upload leaves no job folder behind
    before = set(jobs.iterdir())
    (tmp_path / "junk.zip").write_bytes(b"not an archive")
    status, result = _task(server, "filter_archive", tmp_path / "junk.zip")
    assert status == "failed" and result.status_code == 400 and "neither a zip nor a tar" in result.json()["error"]
    assert set(jobs.iterdir()) == before


def _task(server, endpoint: str, archive: Path | None = None, **fields) -> tuple[str, httpx.Response]:
    """Submit a dataset task — `fields` as its JSON body, or with an archive upload as form
    fields — and wait for it: its final status and the response of GET /<endpoint>/get."""
    if archive is None:
        r = httpx.post(f"{server.url}/{endpoint}/submit", json=fields)
    else:
        with archive.open("rb") as fh:
            r = httpx.post(f"{server.url}/{endpoint}/submit", files={"archive": (archive.name, fh)}, data=fields)
    task = r.json()["task_id"]
    status = _wait_task(server, task, endpoint)
    return status, httpx.get(f"{server.url}/{endpoint}/get", params={"task_id": task})


def _wait_task(server, task_id: str, endpoint: str = "filter_dataset", timeout: float = 120) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        status = httpx.get(f"{server.url}/{endpoint}/status", params={"task_id": task_id}).json()["status"]
        if status in ("completed", "failed", "canceled"):
            return status
        time.sleep(0.2)
    raise TimeoutError(task_id)


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_grpc_dataset_stream_with_corrupt_files(stub, datasets):
    from services.cli import _count_files

    events = list(stub.FilterDataset(pb.FilterDatasetRequest(dataset=str(datasets / "synth"), threshold=0.5), timeout=120))
    decisions = [e.decision for e in events if e.WhichOneof("event") == "decision"]
    summary = events[-1].summary
    files = {d.file for d in decisions}
    assert len(files) == len(decisions) == summary.total == 162
    assert _count_files(datasets / "synth") == 162  # `facegen filter`'s bar (counted labels.csv and configs too)
    by = {d.file: d for d in decisions}
    assert by["unlabeled/corrupt.png"].reason.startswith("unreadable") and not by["unlabeled/corrupt.png"].HasField("p_female")
    assert by["Female/notes.txt"].reason.startswith("unreadable")
    assert all(not d.kept for d in decisions if d.file.startswith("Male/"))
    assert all(d.kept == (d.p_female >= 0.5) for d in decisions if d.reason in ("kept", "below_threshold"))
    rows = _csv_rows(Path(summary.selection_csv).read_text())
    assert [r["file"] for r in rows] == sorted(files)


def test_http_task_filters_a_folder_and_an_uploaded_archive(server, stub, datasets, tmp_path):
    status, result = _task(server, "filter_dataset", dataset=str(datasets / "real"), threshold=0.9)
    assert status == "completed"
    result = result.json()
    rows = _csv_rows(result["selection_csv"])
    assert len(rows) == result["summary"]["total"] == len(list((datasets / "real").rglob("*.*")))
    progress = httpx.post(f"{server.url}/job_progress", json={"job_id": result["summary"]["job_id"]}).json()
    assert progress["done"] == progress["total"] and progress["complete"]
    # polling is a read: GET answers the same; an unknown job is a 404 with a message, not a list
    got = httpx.get(f"{server.url}/job_progress", params={"job_id": result["summary"]["job_id"]})
    assert got.status_code == 200 and got.json() == progress
    for r in (httpx.get(f"{server.url}/job_progress", params={"job_id": "no-such-job"}),
              httpx.post(f"{server.url}/job_progress", json={"job_id": "no-such-job"})):
        assert r.status_code == 404 and r.json() == {"error": "no job 'no-such-job' on this filter service",
                                                     "code": "NOT_FOUND"}, r.text
    r = httpx.get(f"{server.url}/job_progress")
    assert r.status_code == 400 and "needs a job_id" in r.json()["error"]
    # the same folder and threshold over gRPC is the same job, though its float32 0.9 is 0.89999998
    events = list(stub.FilterDataset(pb.FilterDatasetRequest(dataset=str(datasets / "real"), threshold=0.9), timeout=120))
    summary = events[-1].summary
    assert summary.job_id == result["summary"]["job_id"] and summary.kept == result["summary"]["kept"]

    archive = tmp_path / "ds.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in _files(datasets / "synth" / "Female", 5):
            zf.write(f, f"Female/{f.name}")
    status, result = _task(server, "filter_archive", archive, threshold="0.5")
    assert status == "completed" and result.json()["summary"]["total"] == 5


def test_uploading_a_finished_archive_again_gives_its_result_again(server, datasets, tmp_path):
    """The unpacked copy is removed when a job finishes; a second upload must not find an empty
    folder (and overwrite the finished selection.csv with a header)."""
    archive = tmp_path / "again.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in _files(datasets / "synth" / "unlabeled", 4):
            zf.write(f, f"unlabeled/{f.name}")
    results = []
    for _ in range(2):
        status, result = _task(server, "filter_archive", archive)
        assert status == "completed"
        results.append(result.json())
    assert results[0]["summary"]["total"] == results[1]["summary"]["total"] == 4
    assert results[1]["selection_csv"] == results[0]["selection_csv"]
    assert len(_csv_rows(Path(results[1]["summary"]["selection_csv"]).read_text())) == 4


def test_an_archive_of_a_folder_keeps_its_layout(server, datasets, tmp_path):
    """`zip -r myset.zip myset/` nests everything under myset/: its Male/ must still be left out."""
    female, male = _files(datasets / "synth" / "Female", 3), _files(datasets / "synth" / "Male", 2)
    archive = tmp_path / "myset.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in female + male:
            zf.write(f, f"myset/{f.parent.name}/{f.name}")
        zf.writestr("__MACOSX/myset/._junk", b"resource fork")
    status, result = _task(server, "filter_archive", archive, threshold="0.5")
    assert status == "completed"
    result = result.json()
    assert result["summary"]["total"] == 5 and result["summary"]["male_folder"] == 2, result["summary"]
    rows = _csv_rows(result["selection_csv"])
    assert sorted(r["file"] for r in rows) == sorted(f"{f.parent.name}/{f.name}" for f in female + male)


@pytest.mark.parametrize("kind", ["zip-slip", "tar-link", "oversize-entry", "file-and-folder"])
def test_malicious_archives_are_refused(server, tmp_path, kind):
    from services.core.errors import BadRequest
    from services.filter.jobs import extract_archive

    archive = tmp_path / "evil"
    words = "traversal|link"
    if kind == "zip-slip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("../../outside.png", b"x")
    elif kind == "oversize-entry":  # 30 MB of zeros, a few KB packed: refused on its header, unpacked never
        words = "an image is at most"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("Female/huge.png", bytes(30 * 2**20))
    elif kind == "file-and-folder":  # was a 500 half-way through unpacking
        words = "both as a file and as the folder"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("Female", b"x")
            zf.writestr("Female/ok.png", b"x")
    else:
        with tarfile.open(archive, "w") as tf:
            info = tarfile.TarInfo("Female/link.png")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
    with pytest.raises(BadRequest, match=words):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path.parent / "outside.png").exists() and not list((tmp_path / "out").rglob("*.png"))
    status, result = _task(server, "filter_archive", archive)
    assert status == "failed"
    assert result.status_code == 400 and re.search(words, result.json()["error"]), result.text


def test_archive_bombs_are_refused(tmp_path):
    from services.core.errors import BadRequest
    from services.filter.jobs import extract_archive

    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(20):
            zf.writestr(f"unlabeled/{i}.png", b"x")
    with pytest.raises(BadRequest, match="entries"):
        extract_archive(archive, tmp_path / "a", max_entries=10)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("unlabeled/zeros.png", bytes(5_000_000))  # compresses to a few KB
    with pytest.raises(BadRequest, match="unpacks"):
        extract_archive(big, tmp_path / "b", max_bytes=1_000_000)


def test_killed_job_resumes_without_duplicates_or_gaps(datasets, tmp_path):
    jobs = tmp_path / "jobs"
    env = {"FACEGEN_ALLOWED_ROOTS": str(datasets), "FACEGEN_JOBS_DIR": str(jobs), "FACEGEN_JOB_CHUNK": "4"}
    request = pb.FilterDatasetRequest(dataset=str(datasets / "synth"), threshold=0.9, job_id="resume-test")
    first = servers.start("services.filter.service:FilterService", "filter", env=env)
    seen: list[str] = []
    try:
        with grpc.insecure_channel(first.grpc_target) as ch:
            stream = rpc.FilterServiceStub(ch).FilterDataset(request, timeout=120)
            for event in stream:
                seen.append(event.decision.file)
                if len(seen) == 40:
                    first.stop(kill=True)  # SIGKILL mid-job
                    break
    finally:
        first.stop(kill=True)
    # nothing of the killed service lives on: BentoML's worker (a session of its own) is gone too
    assert port_is_free("127.0.0.1", first.grpc_port) and port_is_free("127.0.0.1", first.http_port)
    checkpoint = (jobs / "resume-test" / "decisions.jsonl").read_text().splitlines()
    assert 40 <= len(checkpoint) < 162
    second = servers.start("services.filter.service:FilterService", "filter", env=env)
    try:
        with grpc.insecure_channel(second.grpc_target) as ch:
            events = list(rpc.FilterServiceStub(ch).FilterDataset(request, timeout=120))
    finally:
        second.stop()
    resumed = [e.decision.file for e in events if e.WhichOneof("event") == "decision"]
    assert len(resumed) <= 162 - 40  # what was checkpointed is not redone
    rows = _csv_rows((jobs / "resume-test" / "selection.csv").read_text())
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)) == 162 and files == sorted(files)
    assert events[-1].summary.total == 162


def test_queue_full_is_resource_exhausted_and_503(tmp_path):
    env = {"FACEGEN_FILTER_MAX_QUEUE": "4", "FACEGEN_FILTER_MAX_BATCH_SIZE": "2", "FACEGEN_FILTER_MAX_LATENCY_MS": "50"}
    s = servers.start("services.filter.service:FilterService", "filter", env=env)
    try:
        img = pb.Image(raw=pb.RawImage(pixels=bytes(12288), height=64, width=64))

        async def flood():
            async with grpc.aio.insecure_channel(s.grpc_target) as ch:
                stub = rpc.FilterServiceStub(ch)
                calls = [stub.Classify(pb.ClassifyRequest(images=[img, img]), timeout=30) for _ in range(40)]
                return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(flood())
        codes = {r.code() if isinstance(r, grpc.RpcError) else grpc.StatusCode.OK for r in results}
        assert codes == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        busy = next(r for r in results if isinstance(r, grpc.RpcError))
        assert "busy" in busy.details()

        raw = np.zeros((5, 64, 64, 3), np.uint8).tobytes()  # 5 images > queue of 4: refused at once
        r = httpx.post(f"{s.url}/classify_raw", files={"pixels": ("x", raw)}, data={"height": 64, "width": 64})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1 and r.json()["code"] == "RESOURCE_EXHAUSTED"
        # and it still serves
        with grpc.insecure_channel(s.grpc_target) as ch:
            assert len(rpc.FilterServiceStub(ch).Classify(pb.ClassifyRequest(images=[img])).p_female) == 1
    finally:
        s.stop()


def test_taken_grpc_port_is_a_clear_startup_error():
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(RuntimeError) as err:
            servers.start("services.filter.service:FilterService", "filter", grpc_port=port, timeout=60)
        assert "already in use" in str(err.value)


@pytest.mark.parametrize("transport", ["grpc", "http", "http-upload"])
def test_client_cli_writes_the_selection_locally(server, datasets, jobs, tmp_path, transport):
    from click.testing import CliRunner

    from services.cli import main

    out = tmp_path / "selection.csv"
    args = ["filter", str(datasets / "real"), "--threshold", "0.5", "--out", str(out)]
    if transport == "grpc":
        args += ["--grpc", server.grpc_target]
    else:
        args += ["--http", server.url] + (["--upload"] if transport == "http-upload" else [])
    before = set(jobs.iterdir())
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = _csv_rows(out.read_text())
    assert len(rows) == len(list((datasets / "real").rglob("*.*"))) and "kept of" in res.output
    # the same command again resumes that job (here: finds it done) instead of starting another
    made = set(jobs.iterdir()) - before
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and _csv_rows(out.read_text()) == rows and set(jobs.iterdir()) - before == made
    res = CliRunner().invoke(main, ["filter", "/etc", "--grpc", server.grpc_target, "--out", str(out)])
    assert res.exit_code != 0 and "PERMISSION_DENIED" in res.output
    if transport == "http":  # the job fails after its submit was accepted; the reason still shows
        res = CliRunner().invoke(main, ["filter", "/etc", "--http", server.url, "--out", str(out)])
        assert res.exit_code == 1 and "job failed" in res.output and "allowed dataset roots" in res.output, res.output


def test_a_job_already_running_is_a_conflict_to_retry(jobs):
    """Two runs of one job would write the same checkpoint: the second request is refused as
    ABORTED / 409 (a conflict to send again later), not INVALID_ARGUMENT (it is not wrong)."""
    from services.core.errors import classify
    from services.core.runtime import ImageModel, ServingConfig
    from services.filter.service import FilterCore

    core = FilterCore(ImageModel("filter", ServingConfig()))

    async def both():
        async with core.exclusive("job-a"):
            with pytest.raises(Exception) as second:
                async with core.exclusive("job-a"):
                    pass
            async with core.exclusive("job-b"):  # another job runs beside it
                pass
        async with core.exclusive("job-a"):  # and once the first is done, it may run again
            pass
        return second.value

    exc = asyncio.run(both())
    code, status, message = classify(exc)
    assert (code, status) == (grpc.StatusCode.ABORTED, 409) and "already running" in message


def test_a_job_written_with_a_float32_threshold_resumes(tmp_path):
    """A job whose job.json holds gRPC's float32 0.9 is still the 0.9 job; one written by an
    older facegen (no format, other listing rules) is refused, saying what to do; reading a job's
    progress writes nothing."""
    from services.core.errors import BadRequest
    from services.filter.jobs import JOB_FORMAT, DatasetJob, job_progress

    DatasetJob(tmp_path, "job-a", tmp_path / "set", 0.9)
    meta = tmp_path / "job-a" / "job.json"
    meta.write_text(json.dumps({"format": JOB_FORMAT, "dataset": str(tmp_path / "set"), "threshold": 0.8999999761581421}))
    DatasetJob(tmp_path, "job-a", tmp_path / "set", 0.9)
    for dataset, threshold in ((tmp_path / "set", 0.8), (tmp_path / "other", 0.9)):
        with pytest.raises(BadRequest, match="different dataset or threshold"):
            DatasetJob(tmp_path, "job-a", dataset, threshold)
    before = (meta.read_bytes(), meta.stat().st_mtime_ns)
    assert job_progress(tmp_path / "job-a") == {"total": None, "done": 0, "complete": False}
    assert (meta.read_bytes(), meta.stat().st_mtime_ns) == before
    meta.write_text(json.dumps({"dataset": str(tmp_path / "set"), "threshold": 0.9}))  # format 1
    with pytest.raises(BadRequest, match="older facegen .job format 1"):
        DatasetJob(tmp_path, "job-a", tmp_path / "set", 0.9)


def test_a_model_that_fails_to_load_leaves_the_service_up_and_unready(tmp_path):
    """A model file that fails its sha256 check: the worker does not die and restart for ever (it
    did, ~18 times a minute, with /readyz hanging); it stays up, /livez 200, /readyz and every
    route 503 with the reason, no gRPC port serving."""
    import shutil as sh

    export = tmp_path / "filter" / "1"
    sh.copytree(servers.REPO / "exports" / "filter" / "1", export)
    onnx = export / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    server = servers.launch(servers.SERVICES["filter"], "filter", {"FACEGEN_FILTER_EXPORT": str(export)})
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/livez", timeout=1).status_code == 200:
                    r = httpx.get(f"{server.url}/readyz", timeout=2)
                    if r.status_code == 503 and "error" in r.text:
                        break
            assert server.proc.poll() is None, server.log_text()[-2000:]
            time.sleep(0.25)
        r = httpx.get(f"{server.url}/readyz", timeout=2)
        assert r.status_code == 503 and "sha256" in r.json()["error"], r.text
        workers = {p.pid for p in psutil.Process(server.proc.pid).children(recursive=True)}
        time.sleep(3)
        assert workers == {p.pid for p in psutil.Process(server.proc.pid).children(recursive=True)}  # no restarts
        assert httpx.get(f"{server.url}/v1/status", timeout=2).json()["ready"] is False
        r = httpx.post(f"{server.url}/classify_raw", files={"pixels": b"\0" * 12}, data={"height": 2, "width": 2}, timeout=5)
        assert r.status_code == 503 and r.json()["code"] == "UNAVAILABLE" and "sha256" in r.json()["error"]
        with pytest.raises(grpc.RpcError) as err:
            rpc.FilterServiceStub(grpc.insecure_channel(server.grpc_target)).Classify(pb.ClassifyRequest(), timeout=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def _celeba_with_problems(root: Path, synth_root: Path) -> Path:
    from tests.test_layouts import _celeba

    _celeba(root, synth_root, n=6)
    (root / "img_align_celeba" / "000099.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # on disk, not listed
    (root / "img_align_celeba" / "readme.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("layout", ["seed", "celeba", "corrupt"])
def test_select_and_a_filter_job_write_the_same_selection_csv(stub, datasets, tmp_path, synth_root, layout):
    """`facegen-train select` and a filter-service job decide by one rule and write one format:
    byte-identical selection.csv on the seed's layout, on CelebA (whose Male attribute decides,
    where the service used to read a Male/ folder, and whose list_attr_celeba.txt it listed as an
    image row) and on a set with corrupt, truncated, empty and non-image files."""
    from click.testing import CliRunner

    from training.cli import main

    root = datasets / f"parity-{layout}"
    if layout == "celeba":
        _celeba_with_problems(root, synth_root)
    else:
        shutil.copytree(synth_root, root)
        if layout == "corrupt":
            good = next((root / "Female").glob("*.png")).read_bytes()
            (root / "Female" / "truncated.png").write_bytes(good[: len(good) // 2])
            (root / "Female" / "empty.jpg").write_bytes(b"")
            (root / "Male" / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
            (root / "unlabeled" / "deep").mkdir()
            (root / "unlabeled" / "deep" / "notes.md").write_text("# not an image")
    res = CliRunner().invoke(main, ["select", "--data", str(root), "--threshold", "0.5",
                                    "--out", str(tmp_path / "train.csv")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    events = list(stub.FilterDataset(pb.FilterDatasetRequest(dataset=str(root), threshold=0.5), timeout=120))
    served = Path(events[-1].summary.selection_csv).read_bytes()
    trained = (tmp_path / "train.csv").read_bytes()
    diff = [(a, b) for a, b in zip(served.decode().splitlines(), trained.decode().splitlines(), strict=False) if a != b]
    assert served == trained, diff[:5]
    rows = _csv_rows(trained.decode())
    if layout == "celeba":
        assert not any(r["file"].endswith("list_attr_celeba.txt") for r in rows)
        assert sum(r["reason"] == "male_folder" for r in rows) == 5  # by the Male attribute
        assert {r["reason"].split(":")[0] for r in rows if "0000" in r["file"] and r["file"].endswith("99.jpg")} == {"unreadable"}
    if layout == "corrupt":
        bad = {r["file"]: r["reason"] for r in rows if r["reason"].startswith("unreadable")}
        assert {"Female/truncated.png", "Female/empty.jpg", "Male/junk.png", "unlabeled/deep/notes.md"} <= set(bad), bad


def test_submit_answers_with_the_job_id_and_the_task_runs_that_job(server, datasets):
    """The client learns a folder job's id from the submit's answer (it used to derive it with the
    server's own function): the id it gets is the one progress and the result report; a caller's
    own id is kept; a path outside the roots still fails in the task, with its message."""
    r = httpx.post(f"{server.url}/filter_dataset/submit", json={"dataset": str(datasets / "real"), "threshold": 0.7})
    assert r.status_code == 200 and r.json()["task_id"] and r.json()["job_id"], r.text
    job_id = r.json()["job_id"]
    assert _wait_task(server, r.json()["task_id"]) == "completed"
    result = httpx.get(f"{server.url}/filter_dataset/get", params={"task_id": r.json()["task_id"]}).json()
    assert result["summary"]["job_id"] == job_id
    assert httpx.get(f"{server.url}/job_progress", params={"job_id": job_id}).json()["complete"]
    mine = httpx.post(f"{server.url}/filter_dataset/submit",
                      json={"dataset": str(datasets / "real"), "threshold": 0.7, "job_id": "my-own-job"})
    assert mine.json()["job_id"] == "my-own-job"
    assert _wait_task(server, mine.json()["task_id"]) == "completed"
    out = httpx.post(f"{server.url}/filter_dataset/submit", json={"dataset": "/etc", "threshold": 0.7})
    assert out.status_code == 200 and "job_id" not in out.json()
    assert _wait_task(server, out.json()["task_id"]) == "failed"
    got = httpx.get(f"{server.url}/filter_dataset/get", params={"task_id": out.json()["task_id"]})
    assert got.status_code == 403 and "outside the allowed dataset roots" in got.text
