"""Where one face's Generate spends its time, stage by stage, and what the pipeline server adds.

    PYTHONPATH=. python tests/perf/pipeline_stages.py [--calls 200]

Starts all five services on free 127.0.0.1 ports. Runs the pipeline's own `Pipeline` (the code the
service runs) in this process against the four model services, timing each upstream call it makes
(Sample, Retouch, then Infer ∥ Classify, with the PNG encoding beside them) and the response message;
then the pipeline server's Generate over gRPC for the same request, and a bare round trip to it.
The server's p50 minus the in-process Pipeline's is what the pipeline service's own handling costs
(its gRPC server, interceptor, metrics); the stages say which hop the rest of a face's time is in.
One face, one candidate (oversample 1), one request at a time, p50 of `--calls` after WARMUP untimed.
Then each model's mean time per call inside its service while the server's Generate ran (the
services' own model-call histogram: the run plus the hop to its worker thread) beside the same
model run in this process in the chain's order, batch as the services run it: what the models
lose to running in five processes, apart from the hops and the services' Python.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time

import grpc
import httpx
import numpy as np
import uvloop
from bench_pipeline import lone_threads  # tests/perf/ (the script's folder is on sys.path)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from single_face_hops import feeds_for
from timing import amedian_ms

from services.core.exports import load_session
from services.core.proto import pb, rpc
from services.pipeline import service as pipeline_service
from services.pipeline.generate import Pipeline, validate
from services.pipeline.upstream import Upstreams
from tests import servers

STAGES = ("sample", "retouch", "measure", "p_female")
WARMUP = 20  # untimed calls before each p50; the stages drop the same first calls
# each model → the service whose /metrics times its calls, and its label there
SERVED_BY = {"generator": ("sampler", "sampler"), "refiner": ("critic", "refiner"), "critic": ("critic", "critic"),
             "attributes": ("attributes", "attributes"), "filter": ("filter", "filter")}


def model_seconds(stack: dict) -> dict[str, tuple[float, int]]:
    """Each model's (seconds, calls) so far, from its service's facegen_batch_duration_seconds."""
    out = {}
    for model, (service, label) in SERVED_BY.items():
        text = httpx.get(f"{stack[service].url}/metrics").text
        got = dict(re.findall(rf'facegen_batch_duration_seconds_(sum|count)\{{service="{label}"\}} (\S+)', text))
        out[model] = (float(got.get("sum", 0)), int(float(got.get("count", 0))))
    return out


def in_process_means(calls: int) -> dict[str, float]:
    """Mean ms per call of each model in this process, one face through the chain as the services
    run it (the critic scores the face before and after the retouch in one call of two)."""
    sess = {m: load_session(servers.REPO / "exports" / m / "1")[1] for m in SERVED_BY}
    feeds = feeds_for(sess["generator"], np.zeros((64, 64, 3), np.uint8))  # the generator's: no image in them
    times: dict[str, list[float]] = {m: [] for m in SERVED_BY}

    def timed(model: str, run):
        t0 = time.perf_counter()
        out = run()
        times[model].append(time.perf_counter() - t0)
        return out

    for _ in range(WARMUP + calls):
        face = timed("generator", lambda: sess["generator"].run(["images"], feeds)[0])
        retouched = timed("refiner", lambda f=face: sess["refiner"].run(None, {"images": f})[0])
        timed("critic", lambda f=face, r=retouched: sess["critic"].run(None, {"images": np.concatenate([f, r])}))
        for m in ("attributes", "filter"):
            timed(m, lambda m=m, r=retouched: sess[m].run(None, {"images": r}))
    return {m: 1000 * statistics.fmean(t[WARMUP:]) for m, t in times.items()}


async def run(stack: dict, calls: int) -> None:
    stages: dict[str, list[float]] = {}

    def timed(name, fn):
        async def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                stages.setdefault(name, []).append(1000 * (time.perf_counter() - t0))
        return wrapper

    up = Upstreams({n: stack[n].grpc_target for n in ("sampler", "critic", "attributes", "filter")}, coalesce=1)
    for name in STAGES:
        setattr(up, name, timed(name, getattr(up, name)))
    pipe = Pipeline(up, 30.0, timed("png encoding", pipeline_service.encode_pngs))
    spec = validate({}, 1, None, 1, None, 1, False, 64, 8)

    async def in_process():
        faces, degraded = await pipe.generate(spec)
        await timed("response message", pipeline_service._generate_pb)(spec, faces, degraded)

    local = await amedian_ms(in_process, calls, WARMUP)
    async with grpc.aio.insecure_channel(stack["pipeline"].grpc_target) as ch:
        stub, health = rpc.GenerationServiceStub(ch), health_pb2_grpc.HealthStub(ch)
        before = model_seconds(stack)
        served = await amedian_ms(lambda: stub.Generate(pb.GenerateRequest(count=1, seed=1, oversample=1)), calls,
                                   WARMUP)
        after = model_seconds(stack)
        rtt = await amedian_ms(lambda: health.Check(health_pb2.HealthCheckRequest()), calls, WARMUP)
    await up.close()
    for name, times in stages.items():
        print(f"  {name:18s} p50 {statistics.median(times[WARMUP:]):6.2f} ms")
    print(f"  Pipeline in this process p50 {local:6.2f} ms; the pipeline server's Generate p50 {served:6.2f} ms "
          f"(bare round trip {rtt:.2f} ms): the service adds {served - local - rtt:+.2f} ms beyond the round trip")
    here = in_process_means(calls)
    print(f"  threads of a lone batch: {lone_threads(stack)}")
    print("  model       mean ms per call: in this process / in its service during the server's Generate")
    for m in SERVED_BY:
        seconds, n = (a - b for a, b in zip(after[m], before[m], strict=True))
        print(f"  {m:10s} {here[m]:6.2f} / {1000 * seconds / max(n, 1):6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    stack = servers.start_all()
    try:
        uvloop.install()
        asyncio.run(run(stack, args.calls))
    finally:
        for s in stack.values():
            s.stop()


if __name__ == "__main__":
    main()
