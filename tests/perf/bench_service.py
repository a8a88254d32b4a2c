"""Service throughput: single-image requests over gRPC and HTTP vs raw ONNX Runtime.

    PYTHONPATH=. python tests/perf/bench_service.py [--service filter|attributes] [--seconds 10]
        [--concurrency 8 32] [--dataset-n 5000]

Starts the real service (bentoml serve) on free 127.0.0.1 ports, drives it from a separate
client process (asyncio: grpc.aio / httpx) with N requests in flight, and prints req/s, p50/p99
latency and the average batch size the micro-batcher formed (from /metrics). Raw ORT on the same
model, the same machine and the same run gives the ceiling. Then times the batch-filter job over
a folder of procedural images against a decode+resize-only loop over the same folder.
Note: client and server share this machine's cores, so client overhead lowers every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import closed_loop, rate  # tests/perf/timing.py (the script's folder is on sys.path)

from tests import servers

# service → (bentoml target, gRPC stub, gRPC method, request type, body route, multipart route)
SERVICES = {
    "filter": ("services.filter.service:FilterService", "FilterServiceStub", "Classify", "ClassifyRequest",
               "/v1/classify", "/classify_raw"),
    "attributes": ("services.attributes.service:AttributeService", "AttributeServiceStub", "Infer", "InferRequest",
                   "/v1/infer", "/infer_raw"),
    # the critic has no raw multipart route: its multipart figures are skipped
    "critic": ("services.critic.service:CriticService", "CriticServiceStub", "Score", "ScoreRequest", "/v1/score", None),
    "critic-retouch": ("services.critic.service:CriticService", "CriticServiceStub", "Retouch", "RetouchRequest",
                       "/v1/retouch", None),
}
EXPORT = {"critic-retouch": "refiner"}  # the model whose raw ORT rate is the ceiling


def raw_ort(service: str, seconds: float, batch: int) -> float:
    from services.core.exports import load_session

    _, session, _ = load_session(servers.REPO / "exports" / EXPORT.get(service, service) / "1")
    x = np.random.default_rng(0).integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)
    return rate(lambda: session.run(None, {"images": x}), batch, seconds)


def _client(service: str, kind: str, target: str, concurrency: int, seconds: float, out: mp.Queue) -> None:
    """Runs in its own process: closed-loop clients, each sending the next request on reply."""
    import aiohttp
    import grpc

    from services.core.proto import pb, rpc

    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8).tobytes()

    async def run() -> tuple[list[float], int]:
        if kind == "grpc":
            _, stub_name, method, request_type, _, _ = SERVICES[service]
            async with grpc.aio.insecure_channel(target) as ch:
                call = getattr(getattr(rpc, stub_name)(ch), method)
                req = getattr(pb, request_type)(images=[pb.Image(raw=pb.RawImage(pixels=img, height=64, width=64))])

                async def send(w: int, k: int) -> bool:
                    try:
                        await call(req, timeout=10)
                        return True
                    except grpc.RpcError:
                        return False

                return await closed_loop(send, concurrency, seconds)
        # aiohttp: httpx spent 2–5 ms of client CPU per request here, starving the server
        raw_headers = {"content-type": "application/octet-stream", "x-height": "64", "x-width": "64"}
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(target, connector=connector) as client:

            async def send(w: int, k: int) -> bool:
                if kind == "http":  # the body-only route
                    req = client.post(SERVICES[service][4], data=img, headers=raw_headers)
                else:  # BentoML's multipart API
                    form = aiohttp.FormData()
                    form.add_field("pixels", img, filename="x", content_type="application/octet-stream")
                    form.add_field("height", "64")
                    form.add_field("width", "64")
                    req = client.post(SERVICES[service][5], data=form)
                async with req as r:
                    await r.read()
                    return r.status == 200

            return await closed_loop(send, concurrency, seconds)

    import resource

    t0 = time.perf_counter()
    latencies, errors = asyncio.run(run())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put((latencies, errors, time.perf_counter() - t0, ru.ru_utime + ru.ru_stime))


def batch_stats(url: str) -> tuple[float, float]:
    import httpx

    text = httpx.get(f"{url}/metrics").text
    total = sum(float(v) for v in re.findall(r'^facegen_batch_size_sum\{[^}]*\} (\S+)', text, re.M))
    count = sum(float(v) for v in re.findall(r'^facegen_batch_size_count\{[^}]*\} (\S+)', text, re.M))
    return total, count


def server_cpu(server: servers.Server) -> float:
    """CPU seconds used so far by every process of the server's process group."""
    import os

    stats = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command name: state, ppid, …; utime and stime are fields 14 and 15 of stat
        stats[int(pid)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    family, grew = {server.proc.pid}, True
    while grew:  # the server and all its descendants (BentoML's workers)
        new = {pid for pid, (ppid, _) in stats.items() if ppid in family} - family
        family |= new
        grew = bool(new)
    return sum(stats[pid][1] for pid in family if pid in stats)


def drive(service: str, kind: str, server: servers.Server, concurrency: int, seconds: float) -> dict:
    target = server.grpc_target if kind == "grpc" else server.url  # http: /v1/classify; http-multipart: /classify_raw
    before = batch_stats(server.url)
    cpu_before = server_cpu(server)
    q: mp.Queue = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=_client, args=(service, kind, target, concurrency, seconds, q))
    p.start()
    latencies, errors, wall, client_cpu = q.get(timeout=seconds + 60)
    p.join()
    after = batch_stats(server.url)
    cpu = server_cpu(server) - cpu_before
    lat = np.array(latencies) * 1000
    batches = after[1] - before[1]
    return {
        "transport": kind, "concurrency": concurrency, "req_s": len(lat) / wall,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "avg_batch": (after[0] - before[0]) / batches if batches else float("nan"), "errors": errors,
        # CPU per request: what the 2 shared cores are spent on
        "server_cpu_ms_per_req": 1000 * cpu / max(1, len(lat)), "client_cpu_ms_per_req": 1000 * client_cpu / max(1, len(lat)),
    }


def bench_dataset(server: servers.Server, n: int, root: Path) -> None:
    import grpc

    from services.core.proto import pb, rpc
    from services.shared.images import decode, fit

    data = root / "bench"
    subprocess.run([sys.executable, "-m", "training.cli", "synth", "--out", str(data), "--n", str(n)], check=True,
                   capture_output=True)
    files = sorted(p for p in data.rglob("*.png"))
    t0 = time.perf_counter()
    for f in files:
        fit(decode(f.read_bytes()), 64, 64)
    decode_rate = len(files) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    with grpc.insecure_channel(server.grpc_target) as ch:
        events = list(rpc.FilterServiceStub(ch).FilterDataset(pb.FilterDatasetRequest(dataset=str(data)), timeout=600))
    job_rate = (len(events) - 1) / (time.perf_counter() - t0)
    print(f"batch filter over {len(files)} procedural PNGs: job {job_rate:.0f} img/s "
          f"(decode+resize-only loop, one thread: {decode_rate:.0f} img/s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--service", choices=sorted(SERVICES), default="filter")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--dataset-n", type=int, default=5000, help="0 skips the batch-filter figure")
    args = ap.parse_args()

    rates = ", ".join(f"batch {b} {raw_ort(args.service, 3, b):.0f} img/s" for b in (1, 8, 32))
    print(f"{args.service}: raw ONNX Runtime {rates}")
    with tempfile.TemporaryDirectory() as tmp:
        server = servers.start(SERVICES[args.service][0], args.service.split("-")[0],
                               env={"FACEGEN_ALLOWED_ROOTS": tmp, "FACEGEN_JOBS_DIR": str(Path(tmp) / "jobs")})
        try:
            for kind in ("grpc", "http", "http-multipart"):
                if kind == "http-multipart" and SERVICES[args.service][5] is None:
                    continue
                for c in args.concurrency:
                    r = drive(args.service, kind, server, c, args.seconds)
                    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}))
            if args.dataset_n and args.service == "filter":
                bench_dataset(server, args.dataset_n, Path(tmp))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
