"""Open an export (read and sha256-checked by services/shared/exports.py) with ONNX Runtime.
Torch-free."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from services.shared.exports import Export, read_export

log = logging.getLogger("facegen.exports")
# what a session's idle intra-op threads do: "run" spins between a run's operators and stops when
# the run ends; "never" sleeps at once (every operator then wakes its threads); "always" keeps
# spinning after the run, on cores another model or service may need
SPIN_MODES = ("run", "never", "always")


def create_session(
    export: Export, device: str = "auto", intra_op_threads: int = 0, inter_op_threads: int = 1, spin: str = "run",
    cpu_arena: bool = True,
):
    """An ORT InferenceSession on CUDA when asked for ("cuda") or available ("auto"), else CPU.

    Returns (session, provider actually in use). onnxruntime-gpu asked for CUDA without a usable
    CUDA silently falls back to CPU, so the provider is read back from the session, not assumed.
    """
    import onnxruntime as ort

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if spin not in SPIN_MODES:
        raise ValueError(f"spin must be one of {', '.join(SPIN_MODES)}, got {spin!r}")
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    elif device == "cuda":
        log.warning("CUDA requested but onnxruntime offers only %s; using CPU", available)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = cpu_arena
    if spin == "never":
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    elif spin == "run":
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    session = ort.InferenceSession(str(export.onnx_path), sess_options=opts, providers=providers)
    in_use = session.get_providers()[0]
    log.info("%s v%s on %s", export.signature.get("model"), export.signature.get("version"), in_use)
    return session, in_use


def shrinking_run_options():
    """ORT run options that hand the session's unused arena memory back at the end of the run. The
    arena keeps the peak of the largest batch otherwise (the sampler: 196 → 1459 MiB after 800
    faces at once); shrinking on every run costs a batch of 16 about a fifth more time, so the
    serving core shrinks only on runs that start with nothing else waiting."""
    import onnxruntime as ort

    opts = ort.RunOptions()
    opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return opts


_NUMPY_TYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def smallest_feeds(session) -> dict[str, np.ndarray]:
    """Zeros for every input of `session`, each dynamic dimension 1: the cheapest run it takes."""
    return {i.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in i.shape], _NUMPY_TYPES[i.type])
            for i in session.get_inputs()}


def load_session(path: Path | str, device: str = "auto", **threads):
    """read_export (sha256 verified) + create_session: (export, session, provider)."""
    export = read_export(path)
    session, provider = create_session(export, device=device, **threads)
    return export, session, provider


def run_images(session, export: Export, images: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """Run a uint8 NHWC image batch through a single-input image model, in chunks."""
    name = export.input()["name"]
    outputs = [o["name"] for o in export.signature["outputs"]]
    parts = [session.run(outputs, {name: images[i : i + batch]}) for i in range(0, len(images), batch)]
    return {o: np.concatenate([p[k] for p in parts]) for k, o in enumerate(outputs)}
