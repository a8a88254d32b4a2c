"""The pipeline under more load than it can serve: many single-face gRPC requests at once, each
with a deadline, against the five services on 127.0.0.1 (started here).

Before admission control (issue 22), at 800 in flight useful throughput fell by half and 543
requests died at their deadline after waiting. Now a request that cannot finish in time behind
the work in flight is refused at once (RESOURCE_EXHAUSTED with a retry hint), so what is admitted
finishes. Prints, per load: answered / refused / timed out, goodput (faces answered per second
of the burst), and the p50 / p99 latency of the answered and of the refused.

  PYTHONPATH=. python tests/perf/bench_overload.py [--in-flight 50 800] [--deadline 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
import numpy as np

from services.core.proto import pb, rpc
from tests import servers


async def burst(target: str, n: int, deadline: float) -> dict:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = rpc.GenerationServiceStub(ch)
        await stub.Generate(pb.GenerateRequest(count=64, seed=1, oversample=1), timeout=60)  # warm, and measure the rate

        async def one(i: int):
            t0 = time.perf_counter()
            try:
                await stub.Generate(pb.GenerateRequest(count=1, seed=i, oversample=1), timeout=deadline)
                return "OK", time.perf_counter() - t0
            except grpc.aio.AioRpcError as exc:
                return exc.code().name, time.perf_counter() - t0

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    by: dict[str, list[float]] = {}
    for code, s in results:
        by.setdefault(code, []).append(s)
    return {"wall": wall, "by": by}


def largest(target: str) -> None:
    async def run(k: int):
        async with grpc.aio.insecure_channel(target) as ch:
            stub = rpc.GenerationServiceStub(ch)

            async def one(i: int):
                t0 = time.perf_counter()
                try:
                    r = await stub.Generate(pb.GenerateRequest(count=256, oversample=8, seed=i), timeout=60)
                    return f"OK ({len(r.faces)} faces)", time.perf_counter() - t0
                except grpc.aio.AioRpcError as exc:
                    return f"{exc.code().name}: {exc.details()[:120]}", time.perf_counter() - t0

            got = await asyncio.gather(*(one(i) for i in range(k)))
            t0 = time.perf_counter()
            await stub.Generate(pb.GenerateRequest(count=1, seed=9, oversample=1), timeout=60)
            return got, time.perf_counter() - t0

    for k in (1, 2):
        got, single = asyncio.run(run(k))
        print(f"largest request × {k}: " + "; ".join(f"{o} in {s:.1f} s" for o, s in got)
              + f"; a single face right after: {single * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--in-flight", type=int, nargs="+", default=[50, 800])
    ap.add_argument("--deadline", type=float, default=5.0)
    ap.add_argument("--largest", action="store_true",
                    help="also the largest legal request (256 faces × oversample 8) with a 60 s deadline, alone and two at once")
    args = ap.parse_args()
    stack = servers.start_all()
    try:
        if args.largest:
            largest(stack["pipeline"].grpc_target)
        print(f"| in flight | answered | refused (RESOURCE_EXHAUSTED) | timed out | other | goodput (faces/s) "
              f"| answered p50 / p99 (ms) | refused p50 (ms) |  deadline {args.deadline:.0f} s")
        print("|---|---|---|---|---|---|---|---|")
        for n in args.in_flight:
            r = asyncio.run(burst(stack["pipeline"].grpc_target, n, args.deadline))
            by = r["by"]
            ok, refused, late = by.get("OK", []), by.get("RESOURCE_EXHAUSTED", []), by.get("DEADLINE_EXCEEDED", [])
            other = {k: len(v) for k, v in by.items() if k not in ("OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")}
            ms = lambda xs, q: f"{np.percentile(xs, q) * 1000:.0f}" if xs else "–"  # noqa: E731
            print(f"| {n} | {len(ok)} | {len(refused)} | {len(late)} | {other or 0} | {len(ok) / r['wall']:.1f} "
                  f"| {ms(ok, 50)} / {ms(ok, 99)} | {ms(refused, 50)} |")
    finally:
        for s in stack.values():
            s.stop()


if __name__ == "__main__":
    main()
