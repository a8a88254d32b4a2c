"""A/B of serving settings on single faces: two full stacks side by side, requests interleaved.

    PYTHONPATH=. python tests/perf/single_face_ab.py "FACEGEN_ORT_SPIN=never" "" [--rounds 10]

Each argument is one stack's extra environment (comma-separated KEY=VALUE, "" for the defaults).
Both stacks (all five services each, on free 127.0.0.1 ports) serve one face at a time, one
request in flight, in alternating blocks of 30 requests, so the VM's drift over minutes falls on
both alike (runs minutes apart differ by more than the settings do). Prints each stack's p50 / p90
/ mean latency, its services' CPU time per face, and each model's lone-batch threads (/v1/status).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import grpc
from bench_pipeline import cpu_s, lone_threads  # tests/perf/ (the script's folder is on sys.path)

from services.core.proto import pb, rpc
from tests import servers

BLOCK, WARMUP = 30, 40


def settings(text: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in text.split(",") if kv)


def stack_cpu_s(stack: dict[str, servers.Server]) -> float:
    return sum(cpu_s(s) for s in stack.values())


async def run(stacks: dict[str, dict[str, servers.Server]], rounds: int) -> None:
    channels = {k: grpc.aio.insecure_channel(st["pipeline"].grpc_target) for k, st in stacks.items()}
    stubs = {k: rpc.GenerationServiceStub(c) for k, c in channels.items()}
    seed = 0
    for stub in stubs.values():
        for _ in range(WARMUP):
            seed += 1
            await stub.Generate(pb.GenerateRequest(count=1, seed=seed, oversample=1))
    latency: dict[str, list[float]] = {k: [] for k in stubs}
    used = dict.fromkeys(stubs, 0.0)
    for _ in range(rounds):
        for k, stub in stubs.items():
            c0 = stack_cpu_s(stacks[k])
            for _ in range(BLOCK):
                seed += 1
                t0 = time.perf_counter()
                await stub.Generate(pb.GenerateRequest(count=1, seed=seed, oversample=1))
                latency[k].append(time.perf_counter() - t0)
            used[k] += stack_cpu_s(stacks[k]) - c0
    for k, ms in latency.items():
        ms = sorted(1000 * t for t in ms)
        print(f"[{k or 'defaults'}] p50 {ms[len(ms) // 2]:.1f} ms  p90 {ms[int(0.9 * len(ms))]:.1f}  "
              f"mean {statistics.fmean(ms):.1f}  services' CPU per face {1000 * used[k] / len(ms):.1f} ms\n"
              f"    threads of a lone batch: {lone_threads(stacks[k])}")
    for c in channels.values():
        await c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    stacks: dict[str, dict[str, servers.Server]] = {}
    try:
        for k in (args.a, args.b):
            stacks[k] = servers.start_all(env=settings(k))
        asyncio.run(run(stacks, args.rounds))
    finally:
        for stack in stacks.values():
            for s in stack.values():
                s.stop()


if __name__ == "__main__":
    main()
