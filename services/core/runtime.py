"""A served image model: export + ONNX session + micro-batcher + metrics, and the settings
every service reads from its environment.

Settings: FACEGEN_<SERVICE>_<NAME> wins over FACEGEN_<NAME>, which wins over the default, so
one variable can tune every service and another can single one out.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from services.core.batcher import MicroBatcher, request_budget
from services.core.errors import classify, http_response
from services.core.exports import create_session, shrinking_run_options, smallest_feeds
from services.core.metrics import ServiceMetrics
from services.shared import images as imgs
from services.shared.exports import Export, read_export

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("facegen.serving")
# auto lone_threads: the all-cores session is kept for lone batches where its fastest of the
# first LONE_TRIAL_RUNS lone batches (of one size) beat the lane session's fastest by this factor
LONE_GAIN = 0.85
LONE_TRIAL_RUNS = 8
# a trial the all-cores session lost is run again after this many more lone batches, at most
# LONE_RETRIALS times before the session is dropped: a neighbour busy on the other core for the
# few hundred milliseconds of a trial otherwise cost the service its fast single faces for good
LONE_RETRIAL_AFTER = 200
LONE_RETRIALS = 2
SHRINK_EVERY_S = 2.0  # the most often a model hands its ONNX Runtime arena's unused memory back


@dataclass(frozen=True)
class ServingConfig:
    export: str = ""  # export folder; empty = exports/<model>/1 of this repository
    grpc_port: int = 0  # each service passes its own (services/shared/ports.py); FACEGEN_<SERVICE>_GRPC_PORT wins
    grpc_host: str = "0.0.0.0"
    device: str = "auto"  # auto | cpu | cuda
    # batches that run at once (0 = auto: one per core, at most 4, on a CPU; 1 on a GPU), each with
    # intra_op_threads threads (0 = auto: the cores shared out between the lanes)
    lanes: int = 0
    intra_op_threads: int = 0
    ort_spin: str = "run"  # idle ORT threads: run | never | always (services/core/exports.py, SPIN_MODES)
    # ONNX Runtime's CPU memory arena: 1 = on (a large graph runs its big batches faster with it),
    # 0 = plain malloc, handed back when the model settles (small graphs lose no speed without it)
    cpu_arena: int = 1
    # threads of the session that runs a batch alone (every other lane idle, nothing waiting), on a
    # CPU: 0 = auto (the lanes' threads together, kept only where the first lone batches ran faster
    # with them), 1 = off, N = N threads without measuring
    lone_threads: int = 0
    max_batch_size: int = 64
    # how long a batch waits for company while another lane is busy (an idle model never waits)
    max_latency_ms: float = 2.0
    max_queue: int = 2048  # images waiting, across requests
    timeout_s: float = 30.0  # per request, when the caller sets no deadline
    max_timeout_s: float = 120.0  # the longest caller deadline honoured (batcher.request_budget)
    max_images_per_request: int = 256
    # pixels of one request's images as their headers declare them, checked before anything is
    # decoded: 32 one-colour 8000×5000 PNGs (4 MB) would otherwise decode to 3.8 GB
    max_request_pixels: int = 64_000_000

    @classmethod
    def from_env(cls, service: str, **defaults) -> ServingConfig:
        return settings_from_env(cls, service, **defaults)


INLINE_DECODE_PIXELS = 1_000_000


def settings_from_env(cls: type, service: str, **defaults):
    """A frozen settings dataclass from FACEGEN_<SERVICE>_<NAME> / FACEGEN_<NAME> / defaults."""
    values = {}
    for f in fields(cls):
        for key in (f"FACEGEN_{service.upper()}_{f.name.upper()}", f"FACEGEN_{f.name.upper()}"):
            if key in os.environ:
                raw = os.environ[key]
                try:
                    values[f.name] = type(getattr(cls, f.name))(raw)  # the default's type
                except ValueError:
                    raise ValueError(f"{key}={raw!r}: expected {f.type}") from None
                break
        else:
            if f.name in defaults:
                values[f.name] = defaults[f.name]
    return cls(**values)


def release_free_heap() -> None:
    """glibc's malloc_trim(0): the free memory of every malloc arena back to the system (a no-op
    elsewhere)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


def _daemon_timer(seconds: float, fn) -> threading.Timer:
    timer = threading.Timer(seconds, fn)
    timer.daemon = True  # never holds a stopping service up
    timer.start()
    return timer


def others_runnable() -> int | None:
    """Tasks runnable on this machine at this instant besides the caller (/proc/loadavg's
    running count), or None where that is not known."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[3].split(b"/")[0]) - 1
    except (OSError, ValueError, IndexError):
        return None


def cpu_lanes_and_threads(lanes: int, threads: int) -> tuple[int, int]:
    """Resolve the auto (0) settings against the cores this process may use: one single-thread
    lane per core up to 4 lanes, the remaining cores shared out as intra-op threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    lanes = lanes or min(cores, 4)
    return lanes, threads or max(1, cores // lanes)


class BatchedModel:
    """An exported model behind a micro-batcher, with its metrics: what every served model shares.
    Subclasses implement `_run(x, session) -> outputs` for one batch of packed rows."""

    def __init__(self, name: str, cfg: ServingConfig, export_name: str | None = None) -> None:
        self.name, self.cfg = name, cfg
        self.export: Export = read_export(cfg.export or REPO / "exports" / (export_name or name) / "1")
        cpu_lanes, threads = cpu_lanes_and_threads(cfg.lanes, cfg.intra_op_threads)
        self.session, self.provider = create_session(self.export, cfg.device, threads, spin=cfg.ort_spin,
                                                     cpu_arena=bool(cfg.cpu_arena))
        # a GPU runs one batch at a time anyway; parallel lanes would only split its batches
        self.lanes = cfg.lanes or (1 if self.provider == "CUDAExecutionProvider" else cpu_lanes)
        self.metrics = ServiceMetrics(name)
        self.metrics.model_loaded(name, str(self.export.signature.get("version")), self.provider)
        self._lane_threads = threads
        self._on_cpu = self.provider == "CPUExecutionProvider"
        self._shrink = shrinking_run_options() if self._on_cpu and cfg.cpu_arena else None
        self._shrunk_at: dict[int, float] = {}  # id(session) → when its arena was last shrunk
        self._owed: dict[int, Any] = {}  # sessions that ran a batch since they last shrank
        self._owed_lock = threading.Lock()
        self._settle_timer: threading.Timer | None = None
        self._wide_threads = cfg.lone_threads or self.lanes * threads
        # while auto measures: batch size → session → run times
        self._trial: dict[int, dict[str, list[float]]] | None = None
        self._lone_kept = bool(cfg.lone_threads)  # set: lone batches run on the lone session
        self._retrials_left, self._until_retrial = LONE_RETRIALS, 0
        self._agreed: set[int] = set()  # batch sizes whose lone and lane outputs were compared equal
        self.lone_session = self._lone_session()
        self.batcher = MicroBatcher(
            partial(self._run, session=self.session), cfg.max_batch_size, cfg.max_latency_ms, cfg.max_queue,
            self.metrics.batch, self.metrics.queue, lanes=self.lanes,
            infer_alone=None if self.lone_session is None else self._run_alone,
        )

    def _run(self, x: np.ndarray, session) -> dict[str, np.ndarray]:
        """Run one batch of packed rows through `session` (the lanes' or the lone one)."""
        raise NotImplementedError

    def run_options(self, session):
        """For a batch about to run on `session` (on a CPU): shrink its memory arena at the end
        when nothing else is waiting (the load is over, or was one request), so a burst's peak is
        not kept for ever — at most once per SHRINK_EVERY_S per session: a burst of a few batches
        finds the queue empty at every batch, and shrinking each of them cost it a fifth of its
        throughput. A batch that does not shrink leaves its session owing one, and every batch
        schedules the model's settling once it has been idle for SHRINK_EVERY_S (`_settle`):
        without it, a burst's last batches, inside the rate limit, kept their peak."""
        if not self._on_cpu:
            return None
        key, now = id(session), time.monotonic()
        shrink = (self._shrink is not None and not self.batcher.queued
                  and now - self._shrunk_at.get(key, 0.0) >= SHRINK_EVERY_S)
        with self._owed_lock:
            if shrink:
                self._shrunk_at[key] = now
                self._owed.pop(key, None)
            elif self._shrink is not None:
                self._owed[key] = session
            if self._settle_timer is None:
                self._settle_timer = _daemon_timer(SHRINK_EVERY_S, self._settle)
        return self._shrink if shrink else None

    def _settle(self) -> None:
        """Once the model is idle: shrink the arenas that owe it (the smallest run each), and hand
        the C heap's free memory back (glibc keeps what a burst freed, in every thread's arena)."""
        with self._owed_lock:
            self._settle_timer = None
            if not self.batcher.idle:
                self._settle_timer = _daemon_timer(SHRINK_EVERY_S, self._settle)
                return
            owed, self._owed = list(self._owed.items()), {}
        for key, session in owed:
            try:
                session.run(None, smallest_feeds(session), self._shrink)
                self._shrunk_at[key] = time.monotonic()
            except Exception:  # noqa: BLE001 - memory housekeeping must never hurt serving
                log.warning("%s: could not shrink a session's arena", self.name, exc_info=True)
        release_free_heap()

    def _lone_session(self):
        """The session for a batch that runs alone, or None where there is nothing to gain (a GPU,
        one core, lone_threads=1). In the auto setting _run_alone then measures whether to keep it."""
        if not self._on_cpu or self._wide_threads <= self._lane_threads:
            return None
        self._trial = None if self.cfg.lone_threads else {}
        return create_session(self.export, "cpu", self._wide_threads, spin=self.cfg.ort_spin,
                              cpu_arena=bool(self.cfg.cpu_arena))[0]

    @property
    def lone_threads(self) -> int | None:
        """Threads a lone batch runs with; None while the auto setting is still measuring."""
        if self._trial is not None:
            return None
        return self._wide_threads if self.lone_session is not None and self._lone_kept else self._lane_threads

    def _run_alone(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """A batch that runs alone. Whether more threads help a single row depends on the graph
        (the refiner always gained from two; an earlier, smaller generator lost), so in the
        auto setting the lone batches alternate between the two sessions until one batch size has
        run LONE_TRIAL_RUNS times on each, and the faster by its fastest run is kept. This is
        measured while serving, not at start-up: the services start side by side, and timed then,
        the refiner's gain came and went with its neighbours' start-up work. A lost trial is run
        again LONE_RETRIAL_AFTER lone batches later, up to LONE_RETRIALS times, and the lone
        session is dropped only when it lost every one of them. A lone batch that finds the
        cores taken by other work runs on the lanes (and is not timed). Whatever the setting,
        the first lone batch of each size runs on both sessions, and the lone session is dropped
        unless their outputs are bitwise equal."""
        if self.lone_session is not None and len(x) not in self._agreed:
            # the same request must give the same answer whichever session runs it: a graph whose
            # results depend on the thread count (float sums split otherwise) keeps the lanes only;
            # one size agreeing says nothing of another (the tiny test generator differs at 2 rows)
            lane, lone = self._run(x, self.session), self._run(x, self.lone_session)
            if any(not np.array_equal(lane[k], lone[k]) for k in lane):
                log.info("%s: a lone batch of %d differs with %d threads: lanes only", self.name, len(x),
                         self._wide_threads)
                self.lone_session, self._trial, self._lone_kept = None, None, False
            else:
                self._agreed.add(len(x))
            return lane
        if self._trial is None:
            if self.lone_session is not None and not self._lone_kept:  # lost a trial; the next one is due later
                self._until_retrial -= 1
                if self._until_retrial <= 0:
                    self._trial = {}
            wide = self._lone_kept and not self._cores_taken()
            return self._run(x, self.lone_session if wide else self.session)
        if self._cores_taken():  # a trial run timed beside other work would time that work
            return self._run(x, self.session)
        trial = self._trial.setdefault(len(x), {"lane": [], "lone": []})  # like is timed against like
        key = "lane" if len(trial["lane"]) <= len(trial["lone"]) else "lone"
        t0 = time.perf_counter()
        out = self._run(x, self.session if key == "lane" else self.lone_session)
        trial[key].append(time.perf_counter() - t0)
        if len(trial["lone"]) >= LONE_TRIAL_RUNS:
            lane, lone = (min(trial[k]) * 1000 for k in ("lane", "lone"))
            keep = lone < LONE_GAIN * lane
            retry = not keep and self._retrials_left > 0
            log.info("%s: a lone batch of %d took %.2f ms with %d thread(s), %.2f ms with %d: %s", self.name, len(x),
                     lane, self._lane_threads, lone, self._wide_threads,
                     "lone batches get every core" if keep else "lanes, tried again later" if retry else "lanes only")
            self._lone_kept, self._trial = keep, None
            if retry:
                self._retrials_left -= 1
                self._until_retrial = LONE_RETRIAL_AFTER
            elif not keep:
                self.lone_session = None
        return out

    def _cores_taken(self) -> bool:
        """Whether other work holds the cores a lone batch would spread over (as many other
        runnable tasks as it has threads: another service's batch, not just this process's event
        loop handing the batch over). Its extra threads would then only contend with that work
        (tests/perf/RESULTS.md, "Single-face latency")."""
        others = others_runnable()
        return others is not None and others >= self._wide_threads

    @property
    def info(self) -> dict[str, str]:
        return {"name": self.name, "version": str(self.export.signature.get("version")), "provider": self.provider}

    async def submit(self, x: np.ndarray, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """Run rows `x` through the batcher within the caller's deadline (cfg.timeout_s without one),
        capped by cfg.max_timeout_s."""
        timeout = request_budget(timeout_s, self.cfg.timeout_s, self.cfg.max_timeout_s)
        return await asyncio.wait_for(self.batcher.submit(x, time.monotonic() + timeout), timeout)


class ImageModel(BatchedModel):
    """An exported image model (uint8 NHWC in)."""

    def __init__(self, name: str, cfg: ServingConfig) -> None:
        super().__init__(name, cfg)
        self.height, self.width = self.export.image_size
        self.input_name = self.export.input()["name"]
        self.output_names = [o["name"] for o in self.export.signature["outputs"]]

    def _run(self, x: np.ndarray, session) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, session.run(self.output_names, {self.input_name: x}, self.run_options(session)),
                        strict=True))

    async def decode(self, items: list, kind: str = "proto") -> list[np.ndarray]:
        """Request images → RGB arrays at the model's size (`decode_images`)."""
        return await decode_images(items, kind, self.cfg, self.height, self.width)

    def prepare(self, images: list[np.ndarray]) -> np.ndarray:
        """Decoded RGB images of any size → one uint8 NHWC batch at the model's size."""
        if not images:
            raise imgs.InvalidImage("no images in the request")
        if len(images) > self.cfg.max_images_per_request:
            raise imgs.InvalidImage(f"{len(images)} images; at most {self.cfg.max_images_per_request} per request")
        return np.stack([imgs.fit(i, self.height, self.width) for i in images])

    async def infer(self, batch: np.ndarray, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        return await self.submit(batch, timeout_s)


async def decode_images(items: list, kind: str, cfg: ServingConfig, height: int, width: int) -> list[np.ndarray]:
    """Request images (facegen.v1.Image messages, or encoded file bytes with kind="bytes") → RGB
    arrays fitted to height × width. The count and the declared pixels are checked before anything
    is decoded, and decoding runs off the event loop, one image at a time fitted at once, so a
    request holds one full-size image in memory at most and other requests are served meanwhile."""
    if not items:
        raise imgs.InvalidImage("no images in the request")
    if len(items) > cfg.max_images_per_request:
        raise imgs.InvalidImage(f"{len(items)} images; at most {cfg.max_images_per_request} per request")
    one = decode_proto_image if kind == "proto" else imgs.decode
    declared = sum(proto_image_pixels(m) if kind == "proto" else imgs.declared_pixels(m) for m in items)
    if declared > cfg.max_request_pixels:
        raise imgs.InvalidImage(f"the request's images hold {declared} pixels; at most {cfg.max_request_pixels} "
                                "per request (send fewer or smaller images)")
    work = lambda: [imgs.fit(one(m), height, width) for m in items]  # noqa: E731
    # a few small images (what the pipeline sends: raw faces at the model's size) decode
    # faster than a hop to a thread; only big requests leave the event loop
    return work() if declared <= INLINE_DECODE_PIXELS else await asyncio.to_thread(work)


def proto_image_pixels(msg) -> int:
    """The pixels a facegen.v1.Image declares (header or raw shape), without decoding it."""
    kind = msg.WhichOneof("data")
    if kind == "encoded":
        return imgs.declared_pixels(msg.encoded)
    if kind == "raw":
        imgs.check_size(msg.raw.width, msg.raw.height)
        return msg.raw.height * msg.raw.width
    raise imgs.InvalidImage("image has neither `raw` nor `encoded` data")


def decode_proto_image(msg) -> np.ndarray:
    """A facegen.v1.Image message → RGB array (InvalidImage on bad input)."""
    kind = msg.WhichOneof("data")
    if kind == "encoded":
        return imgs.decode(msg.encoded)
    if kind == "raw":
        return imgs.from_raw(msg.raw.pixels, msg.raw.height, msg.raw.width)
    raise imgs.InvalidImage("image has neither `raw` nor `encoded` data")


def _caller_left(context: grpc.aio.ServicerContext) -> bool:
    """grpc.aio cancels the handler's task when its caller cancels or runs out of time (its
    context's cancelled() stays False meanwhile); a deadline already past says the same."""
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling()) or context.time_remaining() == 0


@asynccontextmanager
async def grpc_call(metrics: ServiceMetrics, method: str, context: grpc.aio.ServicerContext):
    """Record metrics for a gRPC method and turn exceptions into status codes with messages."""
    with metrics.request(method, "grpc") as outcome:
        try:
            yield
        except asyncio.CancelledError:
            outcome["status"] = "CANCELLED"
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            if _caller_left(context):
                # the caller left (its deadline, a cancel) and the work failed because of it: there
                # is nobody to tell, and aborting the finished call raises inside grpc (a traceback)
                outcome["status"] = "CANCELLED"
                raise asyncio.CancelledError from exc
            code, _, message = classify(exc)
            outcome["status"] = code.name
            await context.abort(code, message)


async def http_call(metrics: ServiceMetrics, method: str, work: Callable[[], Awaitable[Any]]):
    """Run an HTTP handler's work with metrics; failures become JSON error responses
    ({"error", "code"}, 4xx for the caller's mistakes, 503 + Retry-After when busy)."""
    with metrics.request(method, "http") as outcome:
        try:
            return await work()
        except Exception as exc:
            code, _, _ = classify(exc)
            outcome["status"] = code.name
            return http_response(exc)


def remaining(context: grpc.aio.ServicerContext) -> float | None:
    t = context.time_remaining()
    return None if t is None else max(t, 0.001)
