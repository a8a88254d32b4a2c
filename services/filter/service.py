"""FilterService: calibrated P(female) over HTTP (BentoML) and gRPC (facegen.v1.FilterService).

    bentoml serve services.filter.service:FilterService --port 3001      # + gRPC on 50051

Both transports share one ImageModel (ONNX session + micro-batcher) in the worker process.
Settings (env): FACEGEN_FILTER_EXPORT, FACEGEN_FILTER_GRPC_PORT, FACEGEN_DEVICE,
FACEGEN_MAX_BATCH_SIZE, FACEGEN_MAX_LATENCY_MS, FACEGEN_MAX_QUEUE, FACEGEN_TIMEOUT_S,
FACEGEN_ALLOWED_ROOTS (os.pathsep-separated dataset folders), FACEGEN_JOBS_DIR.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.core import images as imgs
from services.core.errors import BadRequest
from services.core.exports import sha256_file
from services.core.grpc_server import GrpcServer, PortInUse, port_is_free
from services.core.proto import pb, rpc
from services.core.runtime import REPO, ImageModel, ServingConfig, decode_proto_image, grpc_call, http_call, remaining
from services.filter.jobs import DatasetJob, extract_archive, job_id_for, resolve_dataset

log = logging.getLogger("facegen.filter")
SERVICE = "facegen.v1.FilterService"
DEFAULT_THRESHOLD = 0.9


def _env_paths(name: str, default: str) -> list[Path]:
    return [Path(p) for p in os.environ.get(name, default).split(os.pathsep) if p]


class FilterCore:
    """Everything both transports need, independent of BentoML."""

    def __init__(self) -> None:
        self.cfg = ServingConfig.from_env("filter", grpc_port=50051)
        self.model = ImageModel("filter", self.cfg)
        self.allowed_roots = _env_paths("FACEGEN_ALLOWED_ROOTS", str(REPO / "data"))
        self.jobs_dir = Path(os.environ.get("FACEGEN_JOBS_DIR", REPO / "runs" / "jobs"))
        self.job_chunk = int(os.environ.get("FACEGEN_JOB_CHUNK", "64"))  # images per checkpointed step
        self._job_locks: dict[str, asyncio.Lock] = {}

    async def classify(self, decoded: list[np.ndarray], timeout_s: float | None = None) -> list[float]:
        batch = self.model.prepare(decoded)
        return (await self.model.infer(batch, timeout_s))["p_female"].tolist()

    async def score(self, batch: np.ndarray) -> np.ndarray:
        return (await self.model.infer(batch, timeout_s=self.cfg.timeout_s))["p_female"]

    def job(self, dataset: Path, threshold: float, job_id: str = "") -> DatasetJob:
        threshold = DEFAULT_THRESHOLD if threshold == 0 else threshold
        job_id = job_id or job_id_for(dataset, threshold, self.model.export.card["onnx_sha256"])
        if not job_id.replace("-", "").replace("_", "").isalnum() or len(job_id) > 64:
            raise BadRequest("job_id may hold letters, digits, '-' and '_' only (at most 64)")
        return DatasetJob(self.jobs_dir, job_id, dataset, threshold, self.job_chunk)

    def lock(self, job_id: str) -> asyncio.Lock:
        return self._job_locks.setdefault(job_id, asyncio.Lock())

    async def run_job(self, job: DatasetJob):
        """Decisions as they are made (one job id runs once at a time)."""
        lock = self.lock(job.job_id)
        if lock.locked():
            raise BadRequest(f"job {job.job_id} is already running")
        async with lock:
            async for d in job.run(self.score, self.model.height, self.model.width):
                yield d


class FilterServicer(rpc.FilterServiceServicer):
    def __init__(self, core: FilterCore) -> None:
        self.core = core

    async def Classify(self, request, context):
        async with grpc_call(self.core.model.metrics, "Classify", context):
            decoded = [decode_proto_image(m) for m in request.images]
            p = await self.core.classify(decoded, remaining(context))
            return pb.ClassifyResponse(p_female=p, model=pb.ModelInfo(**self.core.model.info))

    async def FilterDataset(self, request, context):
        async with grpc_call(self.core.model.metrics, "FilterDataset", context):
            root = resolve_dataset(request.dataset, self.core.allowed_roots)
            job = self.core.job(root, request.threshold, request.job_id)
            async for d in self.core.run_job(job):
                decision = pb.Decision(file=d.file, kept=d.kept, reason=d.reason)
                if d.p_female is not None:
                    decision.p_female = d.p_female
                yield pb.FilterDatasetEvent(decision=decision)
            yield pb.FilterDatasetEvent(summary=pb.Summary(**job.summary(job_files(job))))


def job_files(job: DatasetJob) -> list[str]:
    from services.filter.jobs import list_files

    return list_files(job.root)


_instance: FilterService | None = None


async def _status(request: Request) -> JSONResponse:
    """Details behind /readyz: model, provider in use, gRPC state, queue."""
    svc = _instance
    if svc is None:
        return JSONResponse({"ready": False}, status_code=503)
    core = svc.core
    body = {
        "ready": svc.grpc.serving,
        "model": core.model.info,
        "grpc": {"port": core.cfg.grpc_port, "serving": svc.grpc.serving},
        "queue": {"images": core.model.batcher.queued, "limit": core.cfg.max_queue},
        "batching": {"max_batch_size": core.cfg.max_batch_size, "max_latency_ms": core.cfg.max_latency_ms},
    }
    return JSONResponse(body, status_code=200 if svc.grpc.serving else 503)


async def _classify_body(request: Request):
    """POST /v1/classify: the body is one encoded image, or with Content-Type
    application/octet-stream raw RGB pixels of n images shaped by X-Height and X-Width headers.

    It skips BentoML's request parsing (which spools every multipart upload to a temporary
    file), so it is the fast HTTP path; same batcher, same metrics, same errors.
    """
    svc = _instance
    if svc is None:
        return JSONResponse({"error": "not ready", "code": "UNAVAILABLE"}, status_code=503)
    core = svc.core

    async def work():
        body = await request.body()
        if request.headers.get("content-type", "").startswith("application/octet-stream"):
            try:
                h, w = int(request.headers["x-height"]), int(request.headers["x-width"])
            except (KeyError, ValueError):
                raise BadRequest("raw pixels need integer X-Height and X-Width headers") from None
            decoded = split_raw(body, h, w)
        else:
            decoded = [imgs.decode(body)]
        return JSONResponse({"p_female": await core.classify(decoded), "model": core.model.info})

    return await http_call(core.model.metrics, "classify", work)


def split_raw(pixels: bytes, height: int, width: int) -> list[np.ndarray]:
    """n raw RGB images of height×width, back to back → n arrays."""
    frame = height * width * 3
    if frame <= 0 or not pixels or len(pixels) % frame:
        raise imgs.InvalidImage(f"{len(pixels)} bytes is not a whole number of {height}×{width}×3 images")
    return [imgs.from_raw(pixels[i : i + frame], height, width) for i in range(0, len(pixels), frame)]


status_app = Starlette(routes=[Route("/status", _status), Route("/classify", _classify_body, methods=["POST"])])


@bentoml.asgi_app(status_app, path="/v1")
@bentoml.service(
    name="facegen-filter",
    workers=1,  # one process: the gRPC server shares its batcher with HTTP
    traffic={"timeout": 120, "max_concurrency": 512},
)
class FilterService:
    def __init__(self) -> None:
        global _instance
        self.core = FilterCore()
        self.grpc = GrpcServer(
            self.core.cfg.grpc_port,
            [SERVICE],
            lambda server: rpc.add_FilterServiceServicer_to_server(FilterServicer(self.core), server),
            host=self.core.cfg.grpc_host,
        )
        _instance = self
        log.info("filter model %s on %s", self.core.model.info, self.core.model.provider)

    @bentoml.on_deployment
    def check_ports() -> None:
        """Runs once in the `bentoml serve` process before any worker: a taken gRPC port stops
        the server with a clear message instead of a worker crash loop."""
        cfg = ServingConfig.from_env("filter", grpc_port=50051)
        if not port_is_free(cfg.grpc_host, cfg.grpc_port):
            raise PortInUse(f"gRPC port {cfg.grpc_host}:{cfg.grpc_port} is already in use; set FACEGEN_FILTER_GRPC_PORT")

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        await self.grpc.start()

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        await self.grpc.stop()
        await self.core.model.batcher.close()

    def __is_ready__(self) -> bool:
        return self.grpc.serving

    @bentoml.api(route="/classify")
    async def classify(self, images: list[Path]) -> dict:
        """P(female) for uploaded image files (multipart form field `images`, repeatable)."""

        async def work():
            p = await self.core.classify([imgs.decode(f.read_bytes()) for f in images])
            return {"p_female": p, "model": self.core.model.info}

        return await http_call(self.core.model.metrics, "classify", work)

    @bentoml.api(route="/classify_raw")
    async def classify_raw(self, pixels: Path, height: int, width: int) -> dict:
        """P(female) for raw uint8 RGB images: the uploaded file `pixels` holds n·height·width·3
        bytes (n images, row-major HWC). A file part, not a form value: BentoML JSON-decodes those."""

        async def work():
            p = await self.core.classify(split_raw(pixels.read_bytes(), height, width))
            return {"p_female": p, "model": self.core.model.info}

        return await http_call(self.core.model.metrics, "classify_raw", work)

    @bentoml.task(route="/filter_dataset")
    async def filter_dataset(self, dataset: str, threshold: float = DEFAULT_THRESHOLD, job_id: str = "") -> dict:
        """Filter a dataset folder on the server (inside FACEGEN_ALLOWED_ROOTS). Returns the summary
        and selection.csv; resubmitting the same dataset and threshold resumes an interrupted job."""
        root = resolve_dataset(dataset, self.core.allowed_roots)
        return await self._finish(self.core.job(root, threshold, job_id))

    @bentoml.task(route="/filter_archive")
    async def filter_archive(self, archive: Path, threshold: float = DEFAULT_THRESHOLD, job_id: str = "") -> dict:
        """Filter an uploaded zip or tar of a dataset (checked for path traversal, links and size
        bombs). Uploading the same archive again resumes its job."""
        job_id = job_id or "upload-" + sha256_file(archive)[:16]
        data = self.core.jobs_dir / job_id / "data"
        if not (data.parent / "unpacked").exists():
            shutil.rmtree(data, ignore_errors=True)
            extract_archive(archive, data)
            (data.parent / "unpacked").touch()
        result = await self._finish(self.core.job(data.resolve(), threshold, job_id))
        shutil.rmtree(data, ignore_errors=True)  # the CSV and the checkpoint stay
        return result

    async def _finish(self, job: DatasetJob) -> dict:
        async for _ in self.core.run_job(job):
            pass
        summary = job.write_csv(job_files(job))
        return {"summary": summary, "selection_csv": job.csv_path.read_text()}

    @bentoml.api(route="/job_progress")
    def job_progress(self, job_id: str) -> dict:
        """Progress of a dataset job: files decided so far of the total."""
        path = self.core.jobs_dir / job_id / "job.json"
        if not job_id.replace("-", "").replace("_", "").isalnum() or not path.exists():
            raise bentoml.exceptions.NotFound(f"no job {job_id!r}")
        import json

        meta = json.loads(path.read_text())
        job = DatasetJob(self.core.jobs_dir, job_id, Path(meta["dataset"]), meta["threshold"])
        return {"job_id": job_id, **job.progress(), "complete": job.csv_path.exists()}
