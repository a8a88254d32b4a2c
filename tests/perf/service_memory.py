"""How much memory a model service keeps after a burst of large images, by allocator settings.

Starts the filter service (real export, 127.0.0.1) under each setting, reads its worker's RSS at
rest, sends `--requests` images of `--side`² pixels (one-colour PNGs: small on the wire, large
once decoded — what a hostile caller sends) `--concurrency` at a time, waits `--settle` seconds
and reads the RSS again. Settings: glibc's defaults (what the services run with), and the
training processes' (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=1e11), which the services used
to inherit from deploy/env.sh.

  PYTHONPATH=. python tests/perf/service_memory.py [--side 6000 --requests 32 --concurrency 8]
  PYTHONPATH=. python tests/perf/service_memory.py --all      # every service: hostile pass + load

With --all, the five services run together (glibc defaults) and each one's RSS is read at rest,
after the reliability suite's hostile corpus (every image route, every JSON route) and after a
load of 800 single faces at once through the pipeline, then after `--settle` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests import servers  # noqa: E402

TRAINING = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


def rss_mib(server: servers.Server) -> float:
    procs = [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(recursive=True)]
    return max(p.memory_info().rss for p in procs) / 2**20  # the worker is the largest process


async def burst(url: str, body: bytes, requests: int, concurrency: int) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300) as client:
        async def one() -> int:
            async with sem:
                r = await client.post(f"{url}/v1/classify", content=body, headers={"content-type": "image/png"})
                return r.status_code
        return await asyncio.gather(*(one() for _ in range(requests)))


def measure(env: dict[str, str], body: bytes, args) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(base)
    try:
        server = servers.start(servers.SERVICES["filter"], "filter", env)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        time.sleep(2)
        rest = rss_mib(server)
        t0 = time.perf_counter()
        codes = asyncio.run(burst(server.url, body, args.requests, args.concurrency))
        seconds = time.perf_counter() - t0
        peak = rss_mib(server)
        time.sleep(args.settle)
        after = rss_mib(server)
    finally:
        server.stop()
    return {"rest": rest, "peak": peak, "after": after, "seconds": seconds,
            "codes": {c: codes.count(c) for c in set(codes)}}


def every_service(settle: float) -> None:
    import grpc

    from services.core.proto import pb, rpc
    from tests.test_reliability import HOSTILE_JSON, IMAGE_ROUTES, JSON_ROUTES, hostile_images

    stack = servers.start_all()
    try:
        time.sleep(2)
        rest = {n: rss_mib(s) for n, s in stack.items()}
        with httpx.Client(timeout=60) as client:
            for data, _ in hostile_images().values():
                for svc, (multipart, body, _) in IMAGE_ROUTES.items():
                    for route in multipart:
                        client.post(stack[svc].url + route, files=[("images", ("x.png", data))])
                    for route in body:
                        client.post(stack[svc].url + route, content=data, headers={"content-type": "image/png"})
            for svc, route in JSON_ROUTES:
                for body in HOSTILE_JSON:
                    client.post(stack[svc].url + route, content=body, headers={"content-type": "application/json"})
        hostile = {n: rss_mib(s) for n, s in stack.items()}

        async def load() -> None:
            async with grpc.aio.insecure_channel(stack["pipeline"].grpc_target) as ch:
                stub = rpc.GenerationServiceStub(ch)

                async def one(i: int) -> None:
                    with contextlib.suppress(grpc.aio.AioRpcError):  # refusals are part of the load
                        await stub.Generate(pb.GenerateRequest(count=1, seed=i), timeout=10)
                await asyncio.gather(*(one(i) for i in range(800)))

        asyncio.run(load())
        loaded = {n: rss_mib(s) for n, s in stack.items()}
        time.sleep(settle)
        after = {n: rss_mib(s) for n, s in stack.items()}
    finally:
        for s in stack.values():
            s.stop()
    print("| service | RSS at rest (MiB) | after the hostile pass | after 800 faces at once | settled | settled / rest |")
    print("|---|---|---|---|---|---|")
    for n in stack:
        print(f"| {n} | {rest[n]:.0f} | {hostile[n]:.0f} | {loaded[n]:.0f} | {after[n]:.0f} | {after[n] / rest[n]:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=6000)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--all", action="store_true", help="every service, under the hostile pass and a load")
    args = ap.parse_args()
    if args.all:
        every_service(args.settle)
        return
    buf = io.BytesIO()
    Image.fromarray(np.full((args.side, args.side, 3), 128, np.uint8)).save(buf, "PNG")
    body = buf.getvalue()
    print(f"{args.requests} × a {args.side}×{args.side} PNG ({len(body) / 1e3:.0f} KB, "
          f"{args.side**2 * 3 / 2**20:.0f} MiB decoded), {args.concurrency} in flight, RSS after {args.settle:.0f} s")
    print("| allocator | RSS at rest (MiB) | peak | after | after / rest | burst (s) | answers |")
    print("|---|---|---|---|---|---|---|")
    for name, env in (("glibc defaults (the services)", {}), ("training settings (MALLOC_*)", TRAINING)):
        m = measure(env, body, args)
        print(f"| {name} | {m['rest']:.0f} | {m['peak']:.0f} | {m['after']:.0f} | {m['after'] / m['rest']:.2f} "
              f"| {m['seconds']:.1f} | {m['codes']} |")


if __name__ == "__main__":
    main()
