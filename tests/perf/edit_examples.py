"""The README's edit picture: a few faces, each edited through the running pipeline (gRPC Edit,
with the retouch) in each condition to a low and a high value.

Rows: three held-out procedural faces (data/bench) of light, mid and dark skin, then scikit-image's
astronaut photograph (Eileen Collins), cropped around the face OpenCV finds. Columns: the face as
the services see it (fitted to 64 × 64), then for eyes, mouth, hair_color, background, head the
edit to 0.1 and to 0.9. Prints what the attribute service measured before and after each edit.

  PYTHONPATH=. python tests/perf/edit_examples.py [--out training/assets/edit_examples.png]
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from services.core.proto import pb, rpc
from services.shared.conditions import CONDITIONS
from services.shared.images import fit
from tests import servers


def astronaut_face() -> np.ndarray:
    import cv2
    from skimage import data

    img = data.astronaut()
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    x, y, w, h = max(cascade.detectMultiScale(grey, 1.1, 4, minSize=(60, 60)), key=lambda b: b[2] * b[3])
    side = int(w / 0.42)  # the procedural faces' width is ~0.42 of their image
    cx, cy = x + w // 2, y + h // 2 + int(0.12 * side)  # a little below the face: chin and shoulders
    top, left = max(cy - side // 2, 0), max(cx - side // 2, 0)
    return img[top : top + side, left : left + side]


def bench_faces(root: Path, n: int = 3) -> list[np.ndarray]:
    with (root / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["female"] == "1" and abs(float(r["head"]) - 0.5) < 0.15]
    picked = []
    for lo, hi in ((0.0, 0.25), (0.4, 0.6), (0.75, 1.0)):  # light, mid, dark skin
        picked.append(next(r for r in rows if lo <= float(r["skin_tone"]) < hi))
    return [np.asarray(Image.open(root / r["file"]).convert("RGB")) for r in picked[:n]]


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("data/bench"))
    ap.add_argument("--out", type=Path, default=Path("training/assets/edit_examples.png"))
    ap.add_argument("--zoom", type=int, default=2)
    args = ap.parse_args()
    faces = [*bench_faces(args.data), astronaut_face()]
    names = ["procedural, light", "procedural, mid", "procedural, dark", "astronaut photo"]
    stack = servers.start_all()
    rows = []
    try:
        stub = rpc.GenerationServiceStub(grpc.insecure_channel(stack["pipeline"].grpc_target))
        for name, face in zip(names, faces, strict=True):
            row = [fit(face, 64, 64)]
            said = []
            for c in CONDITIONS:
                for v in (0.1, 0.9):
                    r = stub.Edit(pb.EditFaceRequest(image=pb.Image(encoded=png(face)), target=pb.Conditions(**{c: v})),
                                  timeout=60)
                    row.append(np.asarray(Image.open(io.BytesIO(r.png)).convert("RGB")))
                    said.append(f"{c} {getattr(r.measured_before, c):.2f}→{v}: {getattr(r.measured_after, c):.2f}")
            print(f"{name}: " + "; ".join(said))
            rows.append(np.concatenate(row, axis=1))
    finally:
        for s in stack.values():
            s.stop()
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    grid.resize((grid.width * args.zoom, grid.height * args.zoom), Image.Resampling.NEAREST).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
