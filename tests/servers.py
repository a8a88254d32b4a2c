"""Start real services on free 127.0.0.1 ports for integration tests (and benchmarks)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]


def _signal(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def free_port() -> int:
    return free_ports(1)[0]


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for port 0 and to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_ports(n: int) -> list[int]:
    """n distinct free ports below the kernel's ephemeral range. A port the kernel hands out for
    port 0 is an ephemeral one, which it may give to an outgoing connection (a readiness poll, a
    gRPC channel) before the server binds it: a stack failed to start with "Address already in
    use" that way. Every socket stays bound until all are picked, so no port is picked twice."""
    lo = max(1024, _ephemeral_low() - 12000)
    candidates = random.Random().sample(range(lo, lo + 12000), 12000)
    socks: list[socket.socket] = []
    try:
        for port in candidates:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            if len(socks) == n:
                return [x.getsockname()[1] for x in socks]
        raise RuntimeError(f"fewer than {n} free ports in [{lo}, {lo + 12000})")
    finally:
        for s in socks:
            s.close()


@dataclass
class Server:
    proc: subprocess.Popen
    http_port: int
    grpc_port: int
    log: Path  # inside the server's own BENTOML_HOME, which stop() removes
    service: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self, kill: bool = False) -> None:
        """Stop the server and every process it started, and wait until they are gone (a restart
        on the same ports needs them gone). BentoML runs each worker in a session of its own, so
        signalling the main process's group is not enough: a SIGKILL to it orphaned the worker,
        which kept serving on its ports. The tree is collected before anything is signalled."""
        try:
            main = psutil.Process(self.proc.pid)
            rest = main.children(recursive=True)
        except psutil.NoSuchProcess:
            rest = []
        if self.proc.poll() is None:
            # bentoml's own shutdown (SIGINT to its group) stops its workers gracefully
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGINT)
        if kill:
            _signal(rest, signal.SIGKILL)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        _, alive = psutil.wait_procs(rest, timeout=10)
        _signal(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
        # the temporary BENTOML_HOME (log, metrics files): ~80 KB a server, a thousand of them piled
        # up in /tmp over a day of test runs
        shutil.rmtree(self.log.parent, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start(service: str, name: str, env: dict[str, str] | None = None, timeout: float = 90.0,
          http_port: int | None = None, grpc_port: int | None = None) -> Server:
    """`bentoml serve services.<service>` with its own BENTOML_HOME; waits for /readyz."""
    return wait_ready(launch(service, name, env, http_port, grpc_port), timeout)


def launch(service: str, name: str, env: dict[str, str] | None = None,
           http_port: int | None = None, grpc_port: int | None = None) -> Server:
    if http_port is None or grpc_port is None:  # fill the missing ones with ports the caller did not take
        spare = [p for p in free_ports(3) if p not in (http_port, grpc_port)]
        http_port, grpc_port = http_port or spare[0], grpc_port or spare[1]
    home = Path(tempfile.mkdtemp(prefix=f"bentoml-{name}-"))
    log = home / "server.log"
    full_env = {
        **os.environ,
        "BENTOML_HOME": str(home),  # separate metrics directories per server
        "BENTOML_DO_NOT_TRACK": "true",
        f"FACEGEN_{name.upper()}_GRPC_PORT": str(grpc_port),
        "FACEGEN_GRPC_HOST": "127.0.0.1",
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "bentoml", "serve", service, "--host", "127.0.0.1", "--port", str(http_port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Server(proc, http_port, grpc_port, log, service)


def wait_ready(server: Server, timeout: float = 90.0) -> Server:
    proc, service = server.proc, server.service
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server.log_text()[-3000:]
            server.stop()  # collects what it may have left behind, and its BENTOML_HOME
            raise RuntimeError(f"{service} exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    tail = server.log_text()[-3000:]  # before stop() removes it
    server.stop(kill=True)
    raise TimeoutError(f"{service} not ready in {timeout} s:\n{tail}")


SERVICES = {  # name → bentoml target
    "filter": "services.filter.service:FilterService",
    "attributes": "services.attributes.service:AttributeService",
    "sampler": "services.sampler.service:SamplerService",
    "critic": "services.critic.service:CriticService",
    "pipeline": "services.pipeline.service:GenerationService",
}


def start_all(env: dict[str, str] | None = None, timeout: float = 120.0) -> dict[str, Server]:
    """All five services on free ports, the pipeline pointed at the other four over gRPC."""
    picked = free_ports(2 * len(SERVICES))
    ports = dict(zip(SERVICES, picked[::2], strict=True))
    http = dict(zip(SERVICES, picked[1::2], strict=True))
    wiring = {f"FACEGEN_PIPELINE_{name.upper()}": f"127.0.0.1:{ports[name]}" for name in SERVICES if name != "pipeline"}
    started: dict[str, Server] = {}
    try:
        for name, target in SERVICES.items():  # start together, then wait: startup overlaps
            started[name] = launch(target, name, {**wiring, **(env or {})}, http_port=http[name], grpc_port=ports[name])
        for s in started.values():
            wait_ready(s, timeout)
    except Exception:
        for s in started.values():
            s.stop(kill=True)
        raise
    return started
