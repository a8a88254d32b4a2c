"""The export contract shared by all four models.

    exports/<model>/<version>/model.onnx       one self-contained file (no external data)
    exports/<model>/<version>/signature.json   inputs/outputs (names, dtypes, shapes with the
                                               dynamic batch axis, value ranges), image size,
                                               condition names/order, in-graph preprocessing
    exports/<model>/<version>/card.json        training data, config, metrics, sha256 of
                                               model.onnx, export time, exporter versions, parity

Export writes into a temporary folder, checks ONNX Runtime against PyTorch on fixed inputs at
batch 1 and a larger batch, and only then moves the folder into place: a failed parity check
leaves no export behind.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.shared.exports import ExportError, read_export, sha256_file

SIGNATURE_VERSION = 1


class ExportParityError(RuntimeError):
    pass


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: uint8, float32, int64 …
    shape: tuple[int | str, ...]  # "batch" marks the dynamic axis
    range: tuple[float, float] | None = None
    description: str = ""


@dataclass(frozen=True)
class ExportSpec:
    model: str  # filter / attributes / generator / critic / refiner
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # inputs for a given batch size (fixed seeds inside): used for the parity check
    make_inputs: Callable[[int], dict[str, np.ndarray]]
    atol: float = 1e-4  # parity tolerance, max |ORT − PyTorch| over every output element
    parity_batches: tuple[int, ...] = (1, 16)
    extra: dict[str, Any] = field(default_factory=dict)  # image size, conditions, preprocessing …
    # inputs from this index on are the model's *args (torch.export groups them into one tuple)
    varargs_from: int | None = None


def image_model_spec(model: str, version: str, size: int, outputs: tuple[TensorSpec, ...],
                     extra: dict[str, Any] | None = None, seed: int = 1234) -> ExportSpec:
    """The spec of a model that reads uint8 RGB NHWC face images (the filter, the attribute
    model, the critic): the input, its parity inputs and the preprocessing contract."""

    def make_inputs(batch: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed + batch)
        return {"images": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)}

    return ExportSpec(
        model=model,
        version=version,
        inputs=(TensorSpec("images", "uint8", ("batch", size, size, 3), (0, 255), "RGB face images, NHWC"),),
        outputs=outputs,
        make_inputs=make_inputs,
        atol=1e-5,
        extra={
            "image": {"height": size, "width": size, "channels": "RGB", "layout": "NHWC", "dtype": "uint8"},
            "preprocessing": {
                "in_graph": ["uint8 → float32", "x · 2/255 − 1 (range [-1, 1])", "NHWC → NCHW"],
                "caller": f"decode to RGB; centre-crop to the aspect ratio; resize to {size}×{size} bicubic",
            },
            **(extra or {}),
        },
    )


def open_export(export_dir: Path | str, threads: int = 0):
    """(signature, CPU ONNX Runtime session) of an export, after checking model.onnx against the
    sha256 in card.json: training-side inference refuses a modified or half-copied model."""
    import onnxruntime as ort

    try:
        export = read_export(export_dir)  # the serving side's reading and sha256 check
    except ExportError as exc:
        raise ValueError(str(exc)) from exc
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(export.onnx_path), opts, providers=["CPUExecutionProvider"])
    return export.signature, session


def _spec_json(s: TensorSpec) -> dict[str, Any]:
    d = {"name": s.name, "dtype": s.dtype, "shape": list(s.shape)}
    if s.range is not None:
        d["range"] = list(s.range)
    if s.description:
        d["description"] = s.description
    return d


def export_model(
    model: torch.nn.Module, spec: ExportSpec, out_dir: Path | str, card: dict[str, Any], opset: int = 18
) -> dict[str, Any]:
    """Export `model` per `spec` to out_dir (replaced if present); returns the written card."""
    import onnx
    import onnxruntime as ort

    out_dir = Path(out_dir)
    model = model.eval()
    example = {k: torch.from_numpy(v) for k, v in spec.make_inputs(2).items()}
    dynamic = {s.name: {i: torch.export.Dim("batch") for i, d in enumerate(s.shape) if d == "batch"}
               for s in spec.inputs}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        onnx_path = tmp / "model.onnx"
        torch.onnx.export(
            model,
            tuple(example[s.name] for s in spec.inputs),
            str(onnx_path),
            input_names=[s.name for s in spec.inputs],
            output_names=[s.name for s in spec.outputs],
            dynamic_shapes=_group_varargs([dynamic[s.name] for s in spec.inputs], spec.varargs_from),
            external_data=False,
            opset_version=opset,
            verbose=False,
        )
        onnx.checker.check_model(str(onnx_path))
        parity = check_parity(model, onnx_path, spec)

        signature = {
            "signature_version": SIGNATURE_VERSION,
            "model": spec.model,
            "version": spec.version,
            "inputs": [_spec_json(s) for s in spec.inputs],
            "outputs": [_spec_json(s) for s in spec.outputs],
            **spec.extra,
        }
        card = {
            "model": spec.model,
            "version": spec.version,
            **card,
            "onnx_sha256": sha256_file(onnx_path),
            "onnx_bytes": onnx_path.stat().st_size,
            "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "exporter": {
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
                "opset": opset,
                "python": platform.python_version(),
            },
            "parity": parity,
        }
        (tmp / "signature.json").write_text(json.dumps(signature, indent=2) + "\n")
        (tmp / "card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        return card
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _group_varargs(items: list, start: int | None) -> tuple:
    return tuple(items) if start is None else (*items[:start], tuple(items[start:]))


@torch.no_grad()
def check_parity(model: torch.nn.Module, onnx_path: Path, spec: ExportSpec) -> dict[str, Any]:
    """Max |ORT − PyTorch| per batch size; raises ExportParityError beyond spec.atol."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst: dict[str, float] = {}
    for b in spec.parity_batches:
        feeds = spec.make_inputs(b)
        got = sess.run([s.name for s in spec.outputs], feeds)
        want = model(*(torch.from_numpy(feeds[s.name]) for s in spec.inputs))
        want = want if isinstance(want, tuple | list) else (want,)
        diff = 0.0
        for s, g, w in zip(spec.outputs, got, want, strict=True):
            w = w.numpy()
            if g.shape != w.shape:
                raise ExportParityError(f"{s.name}: ONNX shape {g.shape} ≠ PyTorch shape {w.shape} at batch {b}")
            diff = max(diff, float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max()))
        worst[str(b)] = diff
        if diff > spec.atol:
            raise ExportParityError(f"ONNX Runtime differs from PyTorch by {diff:.3g} > {spec.atol} at batch {b}")
    return {"max_abs_diff": worst, "atol": spec.atol, "batches": list(spec.parity_batches)}
