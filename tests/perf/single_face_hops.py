"""Where a single face's time goes: each service called alone vs its models in-process.

    PYTHONPATH=. python tests/perf/single_face_hops.py [--calls 200]

Starts all five services on free 127.0.0.1 ports and, one request at a time, times (p50):
- each model session alone in this process, batch 1 (what the services compute);
- each service's own call for one face over gRPC (sampler: Sample; critic: Retouch, i.e. critic →
  refiner → critic; attributes: Infer; filter: Classify) and a bare gRPC round trip to it (a
  health check: no model, no payload);
- the pipeline's Generate of one face, which crosses sampler → critic → attributes ∥ filter, with
  one candidate and with the default oversample.
A call minus its models minus the bare round trip is what the service's request handling costs.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
import numpy as np
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from timing import amedian_ms, median_ms  # tests/perf/timing.py (the script's folder is on sys.path)

from services.core.exports import load_session
from services.core.proto import pb, rpc
from services.shared.ranking import DEFAULT_OVERSAMPLE
from tests import servers

MODELS = ("generator", "critic", "refiner", "attributes", "filter")


def feeds_for(session, image: np.ndarray, batch: int = 1) -> dict[str, np.ndarray]:
    """Inputs of `batch` items: the image for image models; mid conditions, temperature 0.8, zero
    noise for the generator."""
    feeds = {}
    for i in session.get_inputs():
        shape = [batch if not isinstance(d, int) else d for d in i.shape]
        if i.name == "images":
            feeds[i.name] = np.repeat(image[None], batch, axis=0)
        elif i.name == "temperature":
            feeds[i.name] = np.array(0.8, np.float32)
        else:
            feeds[i.name] = np.full(shape, 0.5 if i.name == "conditions" else 0.0, np.float32)
    return feeds


def in_process(image: np.ndarray, calls: int, batch: int = 1) -> dict[str, float]:
    out = {}
    for m in MODELS:
        session = load_session(servers.REPO / "exports" / m / "1")[1]
        feeds = feeds_for(session, image, batch)
        out[m] = median_ms(lambda s=session, f=feeds: s.run(None, f), calls)
    return out


async def over_grpc(stack: dict, image: np.ndarray, calls: int) -> None:
    ch = {name: grpc.aio.insecure_channel(s.grpc_target) for name, s in stack.items()}
    raw = [pb.Image(raw=pb.RawImage(pixels=image.tobytes(), height=64, width=64))]
    mid = pb.Conditions(eyes=0.5, mouth=0.5, hair_color=0.5, background=0.5, head=0.5)
    requests = {  # what is timed: (the service it goes to, the call)
        "sampler": ("sampler", lambda: rpc.SamplerServiceStub(ch["sampler"]).Sample(
            pb.SampleRequest(conditions=[mid], count=1, seed=1, raw_output=True))),
        "critic": ("critic", lambda: rpc.CriticServiceStub(ch["critic"]).Retouch(
            pb.RetouchRequest(images=raw, raw_output=True))),
        "attributes": ("attributes", lambda: rpc.AttributeServiceStub(ch["attributes"]).Infer(pb.InferRequest(images=raw))),
        "filter": ("filter", lambda: rpc.FilterServiceStub(ch["filter"]).Classify(pb.ClassifyRequest(images=raw))),
        "pipeline": ("pipeline", lambda: rpc.GenerationServiceStub(ch["pipeline"]).Generate(
            pb.GenerateRequest(count=1, seed=1, oversample=1))),
        # what a request that leaves oversample out costs: the best of DEFAULT_OVERSAMPLE candidates
        "pipeline, default oversample": ("pipeline", lambda: rpc.GenerationServiceStub(ch["pipeline"]).Generate(
            pb.GenerateRequest(count=1, seed=1))),
    }
    for name, (service, call) in requests.items():
        health = health_pb2_grpc.HealthStub(ch[service])
        rtt = await amedian_ms(lambda h=health: h.Check(health_pb2.HealthCheckRequest()), calls)
        print(f"  {name:10s} one face {await amedian_ms(call, calls):6.2f} ms   bare round trip {rtt:5.2f} ms")
    for c in ch.values():
        await c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for batch in (1, DEFAULT_OVERSAMPLE):  # one face: one candidate, or the default's candidates
        print(f"models in this process, batch {batch} (p50):")
        times = in_process(image, args.calls, batch)
        for m, ms in times.items():
            print(f"  {m:10s} {ms:6.2f} ms")
        print(f"  sum        {sum(times.values()):6.2f} ms")
    print("services over gRPC, one request at a time (p50):")
    stack = servers.start_all()
    try:
        uvloop.install()
        asyncio.run(over_grpc(stack, image, args.calls))
    finally:
        for s in stack.values():
            s.stop()


if __name__ == "__main__":
    main()
