"""FilterService: calibrated P(female) over HTTP (BentoML) and gRPC (facegen.v1.FilterService).

    bentoml serve services.filter.service:FilterService --port 3001      # + gRPC on 50051

Both transports share one ImageModel (ONNX session + micro-batcher) in the worker process.
Settings (env): FACEGEN_FILTER_EXPORT, FACEGEN_FILTER_GRPC_PORT, FACEGEN_DEVICE,
FACEGEN_MAX_BATCH_SIZE, FACEGEN_MAX_LATENCY_MS, FACEGEN_LANES, FACEGEN_MAX_QUEUE, FACEGEN_TIMEOUT_S,
FACEGEN_ALLOWED_ROOTS (os.pathsep-separated dataset folders), FACEGEN_JOBS_DIR.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from pathlib import Path

import bentoml
import numpy as np

from services.core.bento import ModelService, Unready, body_route, forbid_unknown_fields, port_check, status_app
from services.core.body_limit import BodyLimit, limit_from_env, read_body, replaying
from services.core.errors import BadRequest, Conflict, NotFound
from services.core.proto import pb, rpc
from services.core.runtime import REPO, ImageModel, grpc_call, http_call, remaining
from services.core.wire import to_json
from services.filter.jobs import (
    DEFAULT_THRESHOLD,
    DatasetJob,
    archive_root,
    check_job_id,
    extract_archive,
    is_job_id,
    job_id_for,
    job_progress,
    resolve_dataset,
)
from services.shared import images as imgs
from services.shared.exports import sha256_file


class FilterCore:
    """What both transports do with the model, independent of BentoML."""

    def __init__(self, model: ImageModel) -> None:
        self.model = model
        env = os.environ
        self.allowed_roots = [Path(p) for p in env.get("FACEGEN_ALLOWED_ROOTS", str(REPO / "data")).split(os.pathsep) if p]
        self.jobs_dir = Path(env.get("FACEGEN_JOBS_DIR", REPO / "runs" / "jobs"))
        self.job_chunk = int(env.get("FACEGEN_JOB_CHUNK", "64"))  # images per checkpointed step
        self._job_locks: dict[str, asyncio.Lock] = {}

    async def classify(self, decoded: list[np.ndarray], timeout_s: float | None = None) -> list[float]:
        batch = self.model.prepare(decoded)
        return (await self.model.infer(batch, timeout_s))["p_female"].tolist()

    async def score(self, batch: np.ndarray) -> np.ndarray:
        return (await self.model.infer(batch))["p_female"]

    def job_id(self, source: Path | str, threshold: float) -> str:
        """The default id of a job: the same source, threshold and model resume it."""
        return job_id_for(source, threshold, self.model.export.card["onnx_sha256"])

    def job(self, dataset: Path, threshold: float, job_id: str = "") -> DatasetJob:
        job_id = check_job_id(job_id or self.job_id(dataset, threshold))
        return DatasetJob(self.jobs_dir, job_id, dataset, threshold, self.job_chunk)

    @contextlib.asynccontextmanager
    async def exclusive(self, job_id: str):
        """Holds job `job_id` for one caller at a time; a second is refused (it may resubmit later),
        since two runs of one job would write the same checkpoint and files."""
        lock = self._job_locks.setdefault(job_id, asyncio.Lock())
        if lock.locked():
            raise Conflict(f"job {job_id} is already running (for another request); send this one again when it "
                           "has finished to get its result, and follow it meanwhile with /job_progress")
        async with lock:
            yield

    def progress(self, job_id: str) -> dict:
        """Files decided so far of the total, for a job this service knows."""
        path = self.jobs_dir / job_id / "job.json"
        if not job_id:
            raise BadRequest("job_progress needs a job_id (the one /filter_dataset or /filter_archive returned)")
        if not is_job_id(job_id) or not path.exists():
            raise NotFound(f"no job {job_id!r} on this filter service")
        return {"job_id": job_id, **job_progress(path.parent)}

    def run_job(self, job: DatasetJob):
        """Decisions as they are made; the caller holds exclusive(job.job_id)."""
        return job.run(self.score, self.model.height, self.model.width)

    async def finish(self, job: DatasetJob) -> dict:
        """Runs `job` to the end; the caller holds exclusive(job.job_id)."""
        async for _ in self.run_job(job):
            pass
        return {"summary": to_json(pb.Summary(**job.result)), "selection_csv": job.csv_path.read_text()}


class FilterServicer(rpc.FilterServiceServicer):
    def __init__(self, core: FilterCore) -> None:
        self.core = core

    async def Classify(self, request, context):
        async with grpc_call(self.core.model.metrics, "Classify", context):
            return await _classify_pb(self.core, await self.core.model.decode(request.images), remaining(context))

    async def FilterDataset(self, request, context):
        async with grpc_call(self.core.model.metrics, "FilterDataset", context):
            root = resolve_dataset(request.dataset, self.core.allowed_roots)
            job = self.core.job(root, request.threshold, request.job_id)
            async with self.core.exclusive(job.job_id):
                async for d in self.core.run_job(job):
                    decision = pb.Decision(file=d.file, kept=d.kept, reason=d.reason)
                    if d.p_female is not None:
                        decision.p_female = d.p_female
                    yield pb.FilterDatasetEvent(decision=decision)
            yield pb.FilterDatasetEvent(summary=pb.Summary(**job.result))


def _unpack(archive: Path, data: Path) -> None:
    shutil.rmtree(data, ignore_errors=True)  # what an interrupted unpack left
    try:
        extract_archive(archive, data)
    except BaseException:
        # a refused upload (not an archive, a bomb, a traversal) leaves no folder behind; a job
        # that has decisions keeps them (its folder is not empty, so rmdir leaves it)
        shutil.rmtree(data, ignore_errors=True)
        with contextlib.suppress(OSError):
            data.parent.rmdir()
        raise


async def _classify_pb(core: FilterCore, decoded: list[np.ndarray], timeout_s: float | None = None) -> pb.ClassifyResponse:
    return pb.ClassifyResponse(p_female=await core.classify(decoded, timeout_s), model=pb.ModelInfo(**core.model.info))


async def _classify_body(svc: FilterService, decoded: list[np.ndarray]) -> dict:
    return to_json(await _classify_pb(svc.core, decoded))


@bentoml.asgi_app(status_app("filter", [body_route("filter", "classify", _classify_body)]), path="/v1")
@bentoml.service(
    name="facegen-filter",
    workers=1,  # one process: the gRPC server shares its batcher with HTTP
    traffic={"timeout": 120, "max_concurrency": 512},
)
class FilterService(ModelService):
    model_name = "filter"
    grpc_services = ["facegen.v1.FilterService"]
    check_ports = port_check("filter")

    def __init__(self) -> None:
        self.init_model(lambda server: rpc.add_FilterServiceServicer_to_server(FilterServicer(self.core), server))
        self.core = FilterCore(self.model)

    @bentoml.api(route="/classify")
    async def classify(self, images: list[Path]) -> dict:
        """P(female) for uploaded image files (multipart form field `images`, repeatable)."""

        async def work():
            return await _classify_body(self, await self.model.decode([f.read_bytes() for f in images], "bytes"))

        return await http_call(self.model.metrics, "classify", work)

    @bentoml.api(route="/classify_raw")
    async def classify_raw(self, pixels: Path, height: int, width: int) -> dict:
        """P(female) for raw uint8 RGB images: the uploaded file `pixels` holds n·height·width·3
        bytes (n images, row-major HWC). A file part, not a form value: BentoML JSON-decodes those."""

        async def work():
            return await _classify_body(self, imgs.split_raw(pixels.read_bytes(), height, width))

        return await http_call(self.model.metrics, "classify_raw", work)

    @bentoml.task(route="/filter_dataset")
    async def filter_dataset(self, dataset: str, threshold: float = DEFAULT_THRESHOLD, job_id: str = "") -> dict:
        """Filter a dataset folder on the server (inside FACEGEN_ALLOWED_ROOTS). Returns the summary
        and selection.csv; resubmitting the same dataset and threshold resumes an interrupted job."""

        async def work():
            job = self.core.job(resolve_dataset(dataset, self.core.allowed_roots), threshold, job_id)
            async with self.core.exclusive(job.job_id):
                return await self.core.finish(job)

        # a task's failure is stored as its response: mapped here, GET /filter_dataset/get answers
        # 4xx with the message (a bad path, a folder outside the allowed roots), not a bare 500
        return await http_call(self.model.metrics, "filter_dataset", work)

    @bentoml.task(route="/filter_archive")
    async def filter_archive(self, archive: Path, threshold: float = DEFAULT_THRESHOLD, job_id: str = "") -> dict:
        """Filter an uploaded zip or tar of a dataset (checked for path traversal, links and size
        bombs). Uploading the same archive again resumes its job."""

        async def work():
            # Hashing and unpacking run in a thread: an archive of up to 4 GiB would otherwise
            # stall this service's event loop, and with it every Classify of the pipeline.
            # The job id is checked before it names a folder to unpack into (and later delete).
            jid = check_job_id(job_id or "upload-" + self.core.job_id(
                "archive:" + await asyncio.to_thread(sha256_file, archive), threshold))
            data = self.core.jobs_dir / jid / "data"
            unpacked = data.parent / "unpacked"
            async with self.core.exclusive(jid):  # a second upload must not unpack over a running job
                if not unpacked.exists():
                    await asyncio.to_thread(_unpack, archive, data)
                    unpacked.touch()
                result = await self.core.finish(self.core.job(archive_root(data.resolve()), threshold, jid))
                # the CSV and the checkpoint stay: an upload of the same archive unpacks it again
                # and finds every file decided
                unpacked.unlink()
                await asyncio.to_thread(shutil.rmtree, data, True)
            return result

        return await http_call(self.model.metrics, "filter_archive", work)

    @bentoml.api(route="/job_progress")
    async def job_progress(self, job_id: str) -> dict:
        """Progress of a dataset job: files decided so far of the total (also GET /job_progress?job_id=)."""

        async def work():
            return self.core.progress(job_id)

        return await http_call(self.model.metrics, "job_progress", work)


class ProgressByGet:
    """GET /job_progress?job_id=… answers as POST /job_progress does: polling a job is a read
    (BentoML's API routes take POST only)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"].rstrip("/") == "/job_progress":
            from urllib.parse import parse_qs

            from starlette.responses import JSONResponse

            from services.core.bento import INSTANCES

            job_id = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("job_id", [""])[0]
            svc = INSTANCES.get("filter")
            if svc is None:
                response = JSONResponse({"error": "not ready", "code": "UNAVAILABLE"}, status_code=503)
            else:
                response = await http_call(svc.model.metrics, "job_progress", lambda: _progress(svc, job_id))
                if isinstance(response, dict):
                    response = JSONResponse(response)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _progress(svc: FilterService, job_id: str) -> dict:
    return svc.core.progress(job_id)


class JobIdOnSubmit:
    """POST /filter_dataset/submit answers with the job's id beside BentoML's task id, so a client
    can follow /job_progress without knowing how the server names jobs: the id is settled here
    (the caller's, or derived from dataset, threshold and model) and handed to the task with the
    request, so the task runs exactly that job. A request the id cannot be settled for passes on
    untouched, and the task answers it with its error."""

    ROUTE = "/filter_dataset/submit"

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.ROUTE:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)  # within the limit: BodyLimit runs before this middleware
        if body is None:
            return  # the client went away
        job_id = self._job_id(body)
        if job_id is not None:
            body = json.dumps({**json.loads(body), "job_id": job_id}).encode()
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        start: dict | None = None
        chunks: list[bytes] = []

        async def capture(message) -> None:
            nonlocal start
            if job_id is None:
                await send(message)
            elif message["type"] == "http.response.start":
                start = message
            else:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._answer(send, start, b"".join(chunks), job_id)

        await self.app(scope, replaying(body, receive), capture)

    @staticmethod
    def _job_id(body: bytes) -> str | None:
        from services.core.bento import INSTANCES

        svc = INSTANCES.get("filter")
        try:
            request = json.loads(body)
            if svc is None or not isinstance(request, dict) or not isinstance(request.get("dataset"), str):
                return None
            threshold = float(request.get("threshold", DEFAULT_THRESHOLD))
            root = resolve_dataset(request["dataset"], svc.core.allowed_roots)
            return check_job_id(str(request.get("job_id") or "") or svc.core.job_id(root, threshold))
        except (ValueError, TypeError, PermissionError):
            return None

    @staticmethod
    async def _answer(send, start: dict, body: bytes, job_id: str) -> None:
        if start["status"] == 200:
            with contextlib.suppress(ValueError, TypeError):
                body = json.dumps({**json.loads(body), "job_id": job_id}).encode()
        headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# bodies over the limit are refused (413) before BentoML reads them; an archive upload has its own.
# Middlewares run in the order added (the first is outermost): JobIdOnSubmit reads a submit's whole
# body, so it comes after BodyLimit
forbid_unknown_fields(FilterService)
FilterService.add_asgi_middleware(ProgressByGet)
FilterService.add_asgi_middleware(Unready, service="filter")
FilterService.add_asgi_middleware(BodyLimit, service="filter",
                                  large={"/filter_archive": limit_from_env("filter", "MAX_UPLOAD_BYTES", 2 * 2**30)})
FilterService.add_asgi_middleware(JobIdOnSubmit)
