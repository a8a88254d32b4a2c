"""Reading an export folder (exports/<model>/<version>/: model.onnx, signature.json, card.json)
and checking model.onnx against the sha256 recorded in card.json: one rule for serving and for
training-side inference, so a model.onnx that was replaced, truncated or tampered with is
refused with the same clear error wherever it is opened.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUIRED_FILES = ("model.onnx", "signature.json", "card.json")


class ExportError(RuntimeError):
    """An export folder that cannot be served; the message says which file and why."""


@dataclass(frozen=True)
class Export:
    path: Path
    signature: dict[str, Any]
    card: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        return self.path / "model.onnx"

    def input(self, name: str | None = None) -> dict[str, Any]:
        inputs = self.signature["inputs"]
        return inputs[0] if name is None else next(i for i in inputs if i["name"] == name)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image input."""
        img = self.signature["image"]
        return int(img["height"]), int(img["width"])


def beside(export_dir: Path, kind: str) -> Path:
    """Where a graph that belongs to the sampler at `export_dir` lives (its encoder, its redraw):
    exports/<kind>/<version> in the exports/<model>/<version> layout; outside it (a trial export
    under runs/, say) the layout's rule would point to an unrelated folder two levels up, so
    <export_dir>_<kind>. Training writes them there and the sampler service reads them there."""
    export_dir = Path(export_dir)
    if export_dir.parent.name == "generator":
        return export_dir.parent.parent / kind / export_dir.name
    return export_dir.with_name(f"{export_dir.name}_{kind}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_export(path: Path | str, verify: bool = True) -> Export:
    path = Path(path)
    if not path.is_dir():
        raise ExportError(f"{path}: export folder not found")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise ExportError(f"{path}: missing {', '.join(missing)}")
    try:
        signature = json.loads((path / "signature.json").read_text())
        card = json.loads((path / "card.json").read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: unreadable JSON: {exc}") from exc
    if verify:
        want = card.get("onnx_sha256")
        if not want:
            raise ExportError(f"{path / 'card.json'}: no onnx_sha256 recorded")
        got = sha256_file(path / "model.onnx")
        if got != want:
            raise ExportError(
                f"{path / 'model.onnx'}: sha256 {got[:16]}… does not match card.json ({want[:16]}…); "
                "the file was modified after export — re-export it or restore the original"
            )
    return Export(path=path, signature=signature, card=card)
