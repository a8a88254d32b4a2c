"""Where one face's Generate spends its time, stage by stage, and what the pipeline server adds.

    PYTHONPATH=. python tests/perf/pipeline_stages.py [--calls 200]

Starts all five services on free 127.0.0.1 ports. Runs the pipeline's own `Pipeline` (the code the
service runs) in this process against the four model services, timing each upstream call it makes
(Sample, Retouch, then Infer ∥ Classify, with the PNG encoding beside them) and the response message;
then the pipeline server's Generate over gRPC for the same request, and a bare round trip to it.
The server's p50 minus the in-process Pipeline's is what the pipeline service's own handling costs
(its gRPC server, interceptor, metrics); the stages say which hop the rest of a face's time is in.
One face, one candidate (oversample 1), one request at a time, p50 of `--calls` after WARMUP untimed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from timing import amedian_ms  # tests/perf/timing.py (the script's folder is on sys.path)

from services.core.proto import pb, rpc
from services.pipeline import service as pipeline_service
from services.pipeline.generate import Pipeline, validate
from services.pipeline.upstream import Upstreams
from tests import servers

STAGES = ("sample", "retouch", "measure", "p_female")
WARMUP = 20  # untimed calls before each p50; the stages drop the same first calls


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
        served = await amedian_ms(lambda: stub.Generate(pb.GenerateRequest(count=1, seed=1, oversample=1)), calls,
                                   WARMUP)
        rtt = await amedian_ms(lambda: health.Check(health_pb2.HealthCheckRequest()), calls, WARMUP)
    await up.close()
    for name, times in stages.items():
        print(f"  {name:18s} p50 {statistics.median(times[WARMUP:]):6.2f} ms")
    print(f"  Pipeline in this process p50 {local:6.2f} ms; the pipeline server's Generate p50 {served:6.2f} ms "
          f"(bare round trip {rtt:.2f} ms): the service adds {served - local - rtt:+.2f} ms beyond the round trip")


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
