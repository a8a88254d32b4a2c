"""Generation pipeline throughput and memory.

    PYTHONPATH=. python tests/perf/bench_pipeline.py [--seconds 8] [--concurrency 1 8 32] [--count 1 16]

Starts all five services on free 127.0.0.1 ports, drives Generate over gRPC and HTTP from a
separate client process (closed loop, N requests in flight) and prints faces/s and p50/p99
request latency per (transport, count, concurrency), next to the same chain of ONNX sessions
called in-process, one batch of `count` faces at a time (sampler → critic → refiner → critic →
attributes + filter) in the same run. Then the RSS of every service at rest and after the load.
Client, services and the in-process chain share this machine's cores.

Under each cell: the CPU time per face of the in-process chain and of each service (process
tree, user + system), which shows what the hops and the services' Python cost beyond the models.

Each cell is compared with an in-process figure timed right before it (the VM's speed drifts by
±10 % over minutes; one reference per count let that drift into the ratios), and each load
starts with a second of the same load whose figures are dropped (the services' first batches
of a new size pay ONNX Runtime's first-run allocations and the lone-batch trial).

It also times a bare gRPC round trip to every service (a health check: no model, no payload)
and prints what that floor alone allows a single face requested one at a time (and, with one
request in flight, its latency budget: the in-process chain + that floor + 2 ms): its request
crosses four hops in series (client → pipeline → sampler → critic → attributes ∥ filter).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing as mp
import time

import numpy as np
from timing import amedian_ms, closed_loop, rate_and_cpu  # tests/perf/timing.py (the script's folder is on sys.path)

from tests import servers


@functools.cache
def _sessions() -> dict:
    from services.core.exports import load_session

    return {m: load_session(servers.REPO / "exports" / m / "1")[1]
            for m in ("generator", "critic", "refiner", "attributes", "filter")}


def in_process(count: int, seconds: float) -> tuple[float, float]:
    """Faces/s of the chain of exported models called directly, batch = count, and its CPU time
    per face (ms, all of ONNX Runtime's threads)."""
    sess = _sessions()
    noise = [i for i in sess["generator"].get_inputs() if i.name.startswith("noise_")]
    cond = np.random.default_rng(0).random((count, 5), dtype=np.float32)

    def chain() -> None:
        feeds = {"conditions": cond, "temperature": np.array(0.8, np.float32)}
        for j, i in enumerate(noise):  # per-face noise from its own seed, as the sampler does
            feeds[i.name] = np.stack([np.random.default_rng(s).standard_normal(i.shape[1:], dtype=np.float32)
                                      for s in range(j, j + count)])
        images = sess["generator"].run(["images"], feeds)[0]
        sess["critic"].run(None, {"images": images})
        retouched = sess["refiner"].run(None, {"images": images})[0]
        sess["critic"].run(None, {"images": retouched})
        sess["attributes"].run(None, {"images": retouched})
        sess["filter"].run(None, {"images": retouched})

    return rate_and_cpu(chain, count, seconds)


WARMUP_S = 1.0


def _client(kind: str, target: str, count: int, concurrency: int, seconds: float, out: mp.Queue) -> None:
    import aiohttp
    import grpc

    from services.core.proto import pb, rpc

    def seed(w: int, k: int) -> int:  # every request draws new faces
        return w * 10**6 + k * count

    async def measured(send) -> tuple[list[float], int, float, int]:
        warm, _ = await closed_loop(send, concurrency, WARMUP_S)
        t0 = time.perf_counter()
        latencies, errors = await closed_loop(send, concurrency, seconds)
        return latencies, errors, time.perf_counter() - t0, len(warm)

    async def run() -> tuple[list[float], int, float, int]:
        if kind == "grpc":
            async with grpc.aio.insecure_channel(target) as ch:
                stub = rpc.GenerationServiceStub(ch)

                async def send(w: int, k: int) -> bool:
                    try:
                        await stub.Generate(pb.GenerateRequest(count=count, seed=seed(w, k), oversample=1), timeout=60)
                        return True
                    except grpc.RpcError:
                        return False

                return await measured(send)
        async with aiohttp.ClientSession(target, connector=aiohttp.TCPConnector(limit=concurrency)) as client:

            async def send(w: int, k: int) -> bool:
                try:
                    async with client.post("/generate", json={"count": count, "seed": seed(w, k), "oversample": 1}) as r:
                        await r.read()
                        return r.status == 200
                except aiohttp.ClientError:  # a dropped connection is an error the table counts, not the run's end
                    return False

            return await measured(send)

    out.put(asyncio.run(run()))


def load(kind: str, target: str, count: int, concurrency: int, seconds: float,
         stack: dict[str, servers.Server]) -> tuple[float, float, float, int, dict[str, float]]:
    """faces/s, p50 and p99 ms, errors, and each service's CPU time per face (ms, warm-up included)."""
    q: mp.Queue = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=_client, args=(kind, target, count, concurrency, seconds, q))
    before = {name: cpu_s(s) for name, s in stack.items()}
    p.start()
    latencies, errors, wall, warm = q.get()
    used = {name: cpu_s(s) - before[name] for name, s in stack.items()}
    p.join()
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    faces = max(1, (len(latencies) + warm) * count)
    return (len(latencies) * count / wall, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), errors,
            {name: 1000 * t / faces for name, t in used.items()})


def round_trip_ms(target: str, calls: int = 300) -> float:
    """Median latency of a gRPC health check: the cost of one hop before any work is done."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async def run() -> float:
        async with grpc.aio.insecure_channel(target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            return await amedian_ms(lambda: stub.Check(health_pb2.HealthCheckRequest()), calls)

    return asyncio.run(run())


def _tree(server: servers.Server) -> list:
    import psutil

    root = psutil.Process(server.proc.pid)
    return [root, *root.children(recursive=True)]


def cpu_s(server: servers.Server) -> float:
    """CPU seconds (user + system) used so far by the server's process tree."""
    return sum(sum(p.cpu_times()[:2]) for p in _tree(server))


def lone_threads(stack: dict[str, servers.Server]) -> str:
    """Each model's threads for a batch that runs alone, as its service chose them (/v1/status)."""
    import httpx

    out = []
    for name in ("sampler", "critic", "attributes", "filter"):
        status = httpx.get(f"{stack[name].url}/v1/status").json()
        out.append(f"{name} {status['batching']['lone_threads']}")
        if "refiner" in status:
            out.append(f"refiner {status['refiner']['lone_threads']}")
    return "  ".join(out)


def rss_mib(server: servers.Server) -> float:
    """Resident memory of the server's process tree (bentoml serve + its workers)."""
    return sum(p.memory_info().rss for p in _tree(server)) / 2**20


LATENCY_SLACK_MS = 2.0  # what a single face may cost beyond its chain and the bare hops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--count", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args()

    stack = servers.start_all()
    try:
        time.sleep(2)
        at_rest = {name: rss_mib(s) for name, s in stack.items()}
        rtt = {name: round_trip_ms(s.grpc_target) for name, s in stack.items()}
        print("gRPC round trip (health check, median ms): " + "  ".join(f"{n} {v:.2f}" for n, v in rtt.items()))
        head = f"{'transport':<9} {'count':>5} {'conc':>4} {'faces/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
        print(head + "  in-process faces/s")
        for count in args.count:
            if count == 1:
                chain_ms = 1000 / in_process(count, args.seconds)[0]
                hops_ms = rtt["pipeline"] + rtt["sampler"] + rtt["critic"] + max(rtt["attributes"], rtt["filter"])
                print(f"count 1, one at a time: the in-process chain takes {chain_ms:.1f} ms, four hops at least "
                      f"{hops_ms:.1f} ms → no pipeline of these services passes {chain_ms / (chain_ms + hops_ms):.2f}×")
            for conc in args.concurrency:
                for kind, target in (("grpc", stack["pipeline"].grpc_target), ("http", stack["pipeline"].url)):
                    ref, ref_cpu = in_process(count, args.seconds / 2)
                    rate, p50, p99, errors, cpu = load(kind, target, count, conc, args.seconds, stack)
                    print(f"{kind:<9} {count:>5} {conc:>4} {rate:>8.1f} {p50:>8.1f} {p99:>8.1f} {errors:>6}  "
                          f"{ref:.1f} (pipeline/in-process {rate / ref:.2f})", flush=True)
                    print(f"    CPU ms per face: in-process {ref_cpu:.2f}; services {sum(cpu.values()):.2f}: "
                          + "  ".join(f"{n} {v:.2f}" for n, v in cpu.items()), flush=True)
                    if count == 1 and conc == 1:  # the settled rule for one face at one request in flight
                        print(f"    threads of a lone batch: {lone_threads(stack)}")
                        ref_ms = 1000 / ref
                        budget = ref_ms + hops_ms + LATENCY_SLACK_MS
                        print(f"    latency budget (in-process chain {ref_ms:.1f} + hops {hops_ms:.1f} + "
                              f"{LATENCY_SLACK_MS:g} ms) {budget:.1f} ms: p50 {p50:.1f} ms, "
                              f"{'within' if p50 <= budget else 'over'} by {abs(budget - p50):.1f} ms", flush=True)
        loaded = {name: rss_mib(s) for name, s in stack.items()}
        print("\nRSS MiB   " + "  ".join(f"{n}: {at_rest[n]:.0f} → {loaded[n]:.0f}" for n in stack))
    finally:
        for s in stack.values():
            s.stop()


if __name__ == "__main__":
    main()
