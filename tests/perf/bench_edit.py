"""How well edits work: held-out procedural faces, each edited in each condition to a new value,
judged by models that took no part in training the generator.

The edit is what the pipeline does (services/pipeline/edit.py), run in-process on the same ONNX
graphs: the attribute export measures the face, the encoder export gives its latents for those
conditions, the redraw export (the sampler without its refinement) redraws them with the one
condition changed (to 0.85 if it measured below 0.5, else 0.15). The independent judge
(exports/judge/1, trained on another set) reads the result. Figures, each beside its reference from the same run:
- target: |judge(edited) − target| of the edited condition (the judge on the real faces: its own error);
- drift: |judge(edited) − judge(face)| of the other four (beside the true edit's: what the judge
  reads as drift when nothing else changed);
- change outside the edited region (eyes and mouth: the face outside their box), mean /255, beside
  the same for a "null edit" (target = measured: what the redraw alone changes);
- identity: the edited face is nearer its source than any other face of the set, in MobileNetV2
  ImageNet features (the benchmark's), beside the same for the null edit;
- the true edit (reference): the procedural set records every face's ground truth, so each source
  is redrawn by the renderer with the one condition set to the target: the edit a perfect editor
  would make. Its identity by the rule above says what that rule allows at all; "identity vs true"
  asks whether the edited face is nearer its own true edit than any other face's true edit;
- with --pipeline, p50 / p90 of one edit through the running services (started here).

  PYTHONPATH=. python tests/perf/bench_edit.py [--n 200] [--keep-groups K] [--pipeline]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from services.shared.conditions import CONDITIONS
from training.export import open_export
from training.quality.benchmark import load_real
from training.quality.feature_net import features, load_feature_net
from training.quality.identity import nearest_is_own, nearest_is_source, true_edits
from training.select import OnnxImageModel

# the face outside which an eyes / mouth edit should change nothing (rows, columns of 64 px)
REGIONS = {"eyes": ((20, 38), (10, 54)), "mouth": ((36, 54), (16, 48))}


def outside(region: tuple[tuple[int, int], tuple[int, int]], size: int = 64) -> np.ndarray:
    (r0, r1), (c0, c1) = region
    mask = np.ones((size, size), bool)
    mask[r0:r1, c0:c1] = False
    return mask


class Editor:
    def __init__(self, generator: Path, encoder: Path, attributes: Path) -> None:
        sig, self.gen = open_export(generator, 0)
        _, self.enc = open_export(encoder, 0)
        self.groups = len(sig["latent_groups"])
        self.attributes = OnnxImageModel(attributes)

    def measure(self, images: np.ndarray) -> np.ndarray:
        return self.attributes(images).astype(np.float32).clip(0, 1)

    def __call__(self, images: np.ndarray, measured: np.ndarray, target: np.ndarray, keep: int | None = None,
                 seed: int = 0) -> np.ndarray:
        noise = self.enc.run(None, {"images": images, "conditions": measured})
        keep = self.groups if keep is None else keep
        rng = np.random.default_rng(seed)
        noise = [z if g < keep else 0.8 * rng.standard_normal(z.shape).astype(np.float32) for g, z in enumerate(noise)]
        feeds = {"conditions": target.astype(np.float32), "temperature": np.array(1.0, np.float32)}
        feeds.update({f"noise_{g}": z for g, z in enumerate(noise)})
        return self.gen.run(["images"], feeds)[0]


def pipeline_latency(faces: np.ndarray, n: int) -> dict:
    import io

    import grpc
    from PIL import Image

    from services.core.proto import pb, rpc
    from tests import servers

    stack = servers.start_all()
    try:
        stub = rpc.GenerationServiceStub(grpc.insecure_channel(stack["pipeline"].grpc_target))
        times = []
        for i in range(n + 5):
            buf = io.BytesIO()
            Image.fromarray(faces[i % len(faces)]).save(buf, "PNG")
            t0 = time.perf_counter()
            stub.Edit(pb.EditFaceRequest(image=pb.Image(encoded=buf.getvalue()), target=pb.Conditions(eyes=0.9)), timeout=30)
            if i >= 5:  # the first calls warm the sessions
                times.append(time.perf_counter() - t0)
    finally:
        for s in stack.values():
            s.stop()
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)), "n": n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--data", type=Path, default=Path("data/bench"))
    ap.add_argument("--redraw", type=Path, default=Path("exports/redraw/1"),
                    help="the graph edits redraw through (the sampler's; exports/generator/1 for an export without one)")
    ap.add_argument("--encoder", type=Path, default=Path("exports/encoder/1"))
    ap.add_argument("--attributes", type=Path, default=Path("exports/attributes/1"))
    ap.add_argument("--judge", type=Path, default=Path("exports/judge/1"))
    ap.add_argument("--keep-groups", type=int, default=None)
    ap.add_argument("--pipeline", action="store_true", help="also time edits through the running services")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    faces, _ = load_real(args.data, args.n, seed=7)
    src = faces.images
    edit = Editor(args.redraw, args.encoder, args.attributes)
    judge, net = OnnxImageModel(args.judge), load_feature_net()
    measured = edit.measure(src)
    judged = judge(src)
    f_src = features(net, src)
    null = edit(src, measured, measured, args.keep_groups)
    report = {"n": args.n, "keep_groups": args.keep_groups, "groups": edit.groups,
              "judge_on_real": {c: float(e) for c, e in zip(CONDITIONS, np.abs(judged - faces.conditions).mean(0), strict=True)},
              "null_edit": {"change_per_255": float(np.abs(null.astype(float) - src).mean()),
                            "identity": nearest_is_source(net, null, f_src)}, "conditions": {}}
    for k, c in enumerate(CONDITIONS):
        target = measured.copy()
        target[:, k] = np.where(measured[:, k] < 0.5, 0.85, 0.15)
        out = edit(src, measured, target, args.keep_groups)
        true = true_edits(args.data, faces.files, c, target[:, k])
        got, judged_true = judge(out), judge(true)
        others = [i for i in range(len(CONDITIONS)) if i != k]
        row = {"target_mae": float(np.abs(got[:, k] - target[:, k]).mean()),
               "true_edit_target_mae": float(np.abs(judged_true[:, k] - target[:, k]).mean()),
               "true_edit_drift": float(np.abs(judged_true[:, others] - judged[:, others]).mean()),
               "true_edit_identity": nearest_is_source(net, true, f_src),
               "identity_vs_true": nearest_is_own(net, out, true),
               "true_edit_change_per_255": float(np.abs(true.astype(float) - src).mean()),
               "moved_toward_target": float(np.mean(np.abs(got[:, k] - target[:, k]) < np.abs(judged[:, k] - target[:, k]))),
               "drift": float(np.abs(got[:, others] - judged[:, others]).mean()),
               "change_per_255": float(np.abs(out.astype(float) - src).mean()),
               "identity": nearest_is_source(net, out, f_src)}
        if c in REGIONS:
            mask = outside(REGIONS[c])
            row["change_outside_per_255"] = float(np.abs(out.astype(float) - src)[:, mask].mean())
            row["null_change_outside_per_255"] = float(np.abs(null.astype(float) - src)[:, mask].mean())
            row["true_edit_change_outside_per_255"] = float(np.abs(true.astype(float) - src)[:, mask].mean())
        report["conditions"][c] = row
    if args.pipeline:
        report["pipeline"] = pipeline_latency(src, 50)
    print("| edited | target MAE (judge; true edit) | moved toward | others' drift (true edit) | change /255 (outside region; "
          "null edit; true edit) | identity (true edit) | identity vs true |")
    print("|---|---|---|---|---|---|---|")
    for c, r in report["conditions"].items():
        outside_txt = (f" ({r['change_outside_per_255']:.1f}; {r['null_change_outside_per_255']:.1f}; "
                       f"{r['true_edit_change_outside_per_255']:.1f})") if "change_outside_per_255" in r else ""
        print(f"| {c} | {r['target_mae']:.3f} ({r['true_edit_target_mae']:.3f}) | {r['moved_toward_target']:.2f} "
              f"| {r['drift']:.3f} ({r['true_edit_drift']:.3f}) | {r['change_per_255']:.1f}{outside_txt} | {r['identity']:.2f} "
              f"({r['true_edit_identity']:.2f}) | {r['identity_vs_true']:.2f} |")
    print("judge on the real faces (its own error): "
          + ", ".join(f"{c} {e:.3f}" for c, e in report["judge_on_real"].items()))
    print(f"null edit (target = measured): change {report['null_edit']['change_per_255']:.1f}/255, "
          f"identity {report['null_edit']['identity']:.2f}")
    if "pipeline" in report:
        lat = report["pipeline"]
        print(f"one edit through the pipeline: p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
