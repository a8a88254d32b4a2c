"""Python stubs for protos/facegen/v1/*.proto, generated with grpcio-tools, never edited by hand.

They are generated into services/_proto/ (git-ignored) at install time (deploy/env.sh runs
`python -m services.core.proto`) and regenerated on import whenever a .proto is newer than its
stub, so the wire schema has one source: the .proto files.

    from services.core.proto import pb, rpc   # facegen.v1 messages and gRPC stubs
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos"
OUT_DIR = ROOT / "services" / "_proto"
PROTOS = sorted(p.relative_to(PROTO_DIR).as_posix() for p in (PROTO_DIR / "facegen" / "v1").glob("*.proto"))


def _stale() -> bool:
    for rel in PROTOS:
        stub = OUT_DIR / rel.replace(".proto", "_pb2.py")
        if not stub.exists() or stub.stat().st_mtime < (PROTO_DIR / rel).stat().st_mtime:
            return True
    return False


def generate() -> None:
    from grpc_tools import protoc

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={OUT_DIR}", f"--pyi_out={OUT_DIR}",
            f"--grpc_python_out={OUT_DIR}", *PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {PROTOS}")
    for pkg in (OUT_DIR, OUT_DIR / "facegen", OUT_DIR / "facegen" / "v1"):
        (pkg / "__init__.py").touch()


def _load() -> tuple[SimpleNamespace, SimpleNamespace]:
    if _stale():
        generate()
    # the generated modules import each other as `facegen.v1.x_pb2`
    if str(OUT_DIR) not in sys.path:
        sys.path.insert(0, str(OUT_DIR))
    messages, stubs = SimpleNamespace(), SimpleNamespace()
    for rel in PROTOS:
        base = rel[: -len(".proto")].replace("/", ".")
        mod = importlib.import_module(base + "_pb2")
        for name in mod.DESCRIPTOR.message_types_by_name:
            setattr(messages, name, getattr(mod, name))
        setattr(messages, "DESCRIPTOR_" + Path(rel).stem, mod.DESCRIPTOR)
        grpc_mod = importlib.import_module(base + "_pb2_grpc")
        for name in dir(grpc_mod):
            if name.endswith(("Stub", "Servicer")) or name.startswith("add_"):
                setattr(stubs, name, getattr(grpc_mod, name))
    return messages, stubs


pb, rpc = _load()

if __name__ == "__main__":
    print(f"generated stubs for {', '.join(PROTOS)} in {OUT_DIR}")


def conditions_pb(names, values) -> pb.Conditions:
    """A facegen.v1.Conditions from condition names and their values, in the same order."""
    return pb.Conditions(**dict(zip(names, map(float, values), strict=True)))
