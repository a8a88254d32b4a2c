"""The default ports of every service (HTTP, gRPC): the services' defaults, the pipeline's
upstream addresses, the client's, and deploy/ (render.py writes ports.env, the bentofiles and the
manifests from this table). FACEGEN_<SERVICE>_GRPC_PORT and `--port` override them per process."""

from __future__ import annotations

PORTS: dict[str, tuple[int, int]] = {  # service → (HTTP, gRPC)
    "pipeline": (3000, 50050),
    "filter": (3001, 50051),
    "attributes": (3002, 50052),
    "sampler": (3003, 50053),
    "critic": (3004, 50054),
}


def grpc_port(service: str) -> int:
    return PORTS[service][1]


def grpc_target(service: str, host: str = "127.0.0.1") -> str:
    return f"{host}:{grpc_port(service)}"
