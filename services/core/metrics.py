"""Prometheus metrics for both transports (HTTP and gRPC) of a service.

BentoML's /metrics already counts its HTTP requests; the gRPC path bypasses BentoML, so the
serving core records its own series for both transports, labelled by `transport`. Inside a
BentoML worker, PROMETHEUS_MULTIPROC_DIR is set and these series land in BentoML's /metrics.
Each service gets its own BENTOML_HOME (the launcher sets it) so services on one host keep
separate metric directories.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUESTS = Counter(
    "facegen_requests_total", "Requests by service, method, transport and status", ["service", "method", "transport", "status"]
)
LATENCY = Histogram(
    "facegen_request_duration_seconds", "Request latency", ["service", "method", "transport"], buckets=LATENCY_BUCKETS
)
IMAGES = Counter("facegen_images_total", "Images processed by the model", ["service"])
BATCH = Histogram("facegen_batch_size", "Images per model call", ["service"], buckets=BATCH_BUCKETS)
BATCH_SECONDS = Histogram("facegen_batch_duration_seconds", "Model call time", ["service"], buckets=LATENCY_BUCKETS)
QUEUE = Gauge("facegen_queue_depth", "Images waiting for the model", ["service"], multiprocess_mode="livesum")
MODEL = Gauge(
    "facegen_model_info",
    "The model being served and the ONNX Runtime provider in use (value 1)",
    ["service", "model", "version", "provider"],
    multiprocess_mode="liveall",
)


# the generation pipeline: what the critic and the checkers say about the faces it makes
REALNESS = Histogram("facegen_realness", "Critic realness of generated faces", ["stage"],
                     buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0))
CONDITION_ERROR = Histogram("facegen_condition_error", "Mean |measured − requested| condition of returned faces",
                            buckets=(0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0))
CANDIDATES = Counter("facegen_candidates_total", "Generated candidates by outcome (kept / rejected by oversampling)",
                     ["outcome"])
IN_FLIGHT_CANDIDATES = Gauge("facegen_pipeline_candidates_in_flight", "Candidates admitted by the pipeline and not finished",
                             multiprocess_mode="livesum")
EDITS = Counter("facegen_edits_total", "Faces edited, by the condition the edit changed", ["condition"])
EDIT_SECONDS = Histogram("facegen_edit_seconds", "Time of one edit through the pipeline, by the condition it changed",
                         ["condition"], buckets=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0))
DEGRADED = Counter("facegen_degraded_total", "Answers given without an unavailable upstream service", ["upstream"])


class ServiceMetrics:
    def __init__(self, service: str) -> None:
        self.service = service

    def model_loaded(self, model: str, version: str, provider: str) -> None:
        MODEL.labels(self.service, model, version, provider).set(1)

    def batch(self, size: int, seconds: float) -> None:
        BATCH.labels(self.service).observe(size)
        BATCH_SECONDS.labels(self.service).observe(seconds)
        IMAGES.labels(self.service).inc(size)

    def queue(self, depth: int) -> None:
        QUEUE.labels(self.service).set(depth)

    @contextmanager
    def request(self, method: str, transport: str):
        """Times the block; the yielded dict's "status" (default OK) becomes the status label."""
        outcome = {"status": "OK"}
        t0 = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            if outcome["status"] == "OK":
                outcome["status"] = "INTERNAL"
            raise
        finally:
            LATENCY.labels(self.service, method, transport).observe(time.perf_counter() - t0)
            REQUESTS.labels(self.service, method, transport, outcome["status"]).inc()
