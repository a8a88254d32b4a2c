"""`facegen`: the client command line for the running services (torch-free)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import time
import zipfile
from pathlib import Path

import click

from services.shared.conditions import CONDITIONS
from services.shared.ports import grpc_port
from services.shared.ranking import DEFAULT_OVERSAMPLE
from services.shared.sampling import DEFAULT_TEMPERATURE, MAX_TEMPERATURE


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Call the facegen services."""


@contextlib.contextmanager
def _http_errors(url: str):
    """Connection failures and timeouts as one line naming the server, not a traceback."""
    import httpx

    try:
        yield
    except httpx.TransportError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc or type(exc).__name__}") from None


def _image_path(ctx, param, value: Path) -> Path:
    """An output path whose suffix Pillow can write, checked before any face is generated."""
    from PIL import Image

    if value.suffix.lower() not in Image.registered_extensions():
        raise click.BadParameter(f"{value}: give a file name ending in .png, .jpg or .webp")
    if not value.absolute().parent.is_dir():
        raise click.BadParameter(f"{value}: folder {value.absolute().parent} does not exist")
    return value


def _count_files(root: Path) -> int | None:
    """The progress bar's total: the files a job decides on, by the shared layout rules (with the
    seed layout, labels and configs at the root are not images of the set)."""
    from services.shared.dataset import DatasetError
    from services.shared.layouts import open_dataset

    try:
        ds = open_dataset(root, verify=False, any_folder=True)
    except DatasetError:
        return None  # the server says what is wrong with it
    return len(ds.records) + len(ds.problems)


@main.command("filter")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.9, show_default=True)
@click.option("--grpc", "grpc_target", metavar="HOST:PORT", help="use the gRPC FilterDataset stream")
@click.option("--http", "http_url", metavar="URL", help="use the HTTP batch job, e.g. http://127.0.0.1:3001")
@click.option("--upload", is_flag=True, help="(HTTP) zip the local folder and upload it instead of naming a server path")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("selection.csv"), show_default=True)
@click.option("--job-id", default="", help="resume this job (default: derived from dataset and threshold)")
def filter_cmd(dataset, threshold, grpc_target, http_url, upload, out, job_id) -> None:
    """Filter DATASET (a folder the server can read, or a local one with --upload) into selection.csv."""
    from tqdm import tqdm

    if bool(grpc_target) == bool(http_url):
        raise click.UsageError("give exactly one of --grpc HOST:PORT or --http URL")
    total = _count_files(dataset)
    with tqdm(total=total, unit="img", desc="filter") as bar:
        if grpc_target:
            summary, rows = _filter_grpc(grpc_target, str(dataset.resolve()), threshold, job_id, bar)
        else:
            summary, rows = _filter_http(http_url, dataset, threshold, job_id, upload, bar)
    out.write_text(rows)
    click.echo(f"wrote {out}: {summary['kept']} kept of {summary['total']} "
               f"(below threshold {summary['below_threshold']}, male folder {summary['male_folder']}, "
               f"unreadable {summary['unreadable']})")


def _filter_grpc(target: str, dataset: str, threshold: float, job_id: str, bar):
    import grpc

    from services.core.proto import pb, rpc
    from services.shared.selection import Decision, selection_csv

    decisions: list[Decision] = []
    summary = None
    with grpc.insecure_channel(target) as ch:
        stub = rpc.FilterServiceStub(ch)
        try:
            for event in stub.FilterDataset(pb.FilterDatasetRequest(dataset=dataset, threshold=threshold, job_id=job_id)):
                if event.WhichOneof("event") == "decision":
                    d = event.decision
                    decisions.append(Decision(d.file, d.p_female if d.HasField("p_female") else None, d.kept, d.reason))
                    bar.update(1)
                else:
                    summary = event.summary
        except grpc.RpcError as exc:
            raise click.ClickException(f"{exc.code().name}: {exc.details()}") from exc
    # a resumed job streams only what was left: the server's CSV holds every file
    path = Path(summary.selection_csv)
    text = path.read_text() if path.exists() else selection_csv(decisions)
    fields = ("total", "kept", "below_threshold", "male_folder", "unreadable")
    return {f: getattr(summary, f) for f in fields}, text


def _upload_job_id(client, url: str, dataset: Path, threshold: float) -> str:
    """An upload's job id, so that uploading the same folder again resumes its job: from what its
    files are, the threshold and the server's model (a folder on the server gets its id from the
    server instead, in the submit's answer)."""
    try:
        model = client.get(f"{url}/v1/status").json().get("onnx_sha256") or ""
    except ValueError:  # not JSON: an older server; the id then leaves the model out
        model = ""
    listing = sorted((p.relative_to(dataset).as_posix(), st.st_size, st.st_mtime_ns)
                     for p in dataset.rglob("*") if p.is_file() for st in [p.stat()])
    digest = hashlib.sha256(f"{listing!r}|{threshold:.6f}|{model}".encode()).hexdigest()[:16]
    return f"cli-upload-{digest}"


def _filter_http(url: str, dataset: Path, threshold: float, job_id: str, upload: bool, bar):
    import httpx

    url = url.rstrip("/")
    with httpx.Client(timeout=60) as client, _http_errors(url):
        if upload:
            if not dataset.is_dir():
                raise click.ClickException(f"{dataset}: not a local folder")
            job_id = job_id or _upload_job_id(client, url, dataset, threshold)
            with tempfile.TemporaryFile() as tmp:
                with zipfile.ZipFile(tmp, "w") as zf:
                    for p in sorted(dataset.rglob("*")):
                        if p.is_file():
                            zf.write(p, p.relative_to(dataset).as_posix())
                tmp.seek(0)
                endpoint = "filter_archive"
                r = client.post(f"{url}/{endpoint}/submit", files={"archive": ("dataset.zip", tmp)},
                                data={"threshold": str(threshold), "job_id": job_id})
        else:
            endpoint = "filter_dataset"
            r = client.post(f"{url}/{endpoint}/submit",
                            json={"dataset": str(dataset.resolve()), "threshold": threshold, "job_id": job_id})
        if r.status_code != 200:
            raise click.ClickException(f"submit failed ({r.status_code}): {r.text}")
        task = r.json()["task_id"]
        job_id = r.json().get("job_id", job_id)  # a folder's job: the server names it
        while True:
            status = client.get(f"{url}/{endpoint}/status", params={"task_id": task}).json()["status"]
            p = client.post(f"{url}/job_progress", json={"job_id": job_id})
            if p.status_code == 200:
                bar.total = p.json()["total"]
                bar.n = p.json()["done"]
                bar.refresh()
            if status in ("completed", "failed", "canceled"):
                break
            time.sleep(0.5)
        result = client.get(f"{url}/{endpoint}/get", params={"task_id": task})
        if status != "completed" or result.status_code != 200:
            raise click.ClickException(f"job {status}: {result.text[:500]}")
        body = result.json()
        return body["summary"], body["selection_csv"]


CONDITION_OPTIONS = CONDITIONS  # one option each, in the shared order
# the pipeline's gRPC address, for every command that calls it
pipeline_grpc_option = click.option(
    "--grpc", "grpc_target", metavar="HOST:PORT",
    default=lambda: f"127.0.0.1:{os.environ.get('FACEGEN_PIPELINE_GRPC_PORT', grpc_port('pipeline'))}",
    show_default=f"127.0.0.1:$FACEGEN_PIPELINE_GRPC_PORT ({grpc_port('pipeline')})")


def _condition(value: str | None, name: str):
    """'0.9' → 0.9; '0.2:0.6' → (0.2, 0.6); None → random in [0, 1]. Checked here, before any
    connection, as the service would check it."""
    if value is None:
        return None
    hint = "--" + name.replace("_", "-")
    try:
        got = tuple(float(v) for v in value.split(":", 1))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number in [0, 1] or a range MIN:MAX", param_hint=hint) from None
    if not all(0.0 <= v <= 1.0 for v in got):  # NaN fails too
        raise click.BadParameter(f"{value!r}: values must be in [0, 1]", param_hint=hint)
    if len(got) == 2 and got[0] > got[1]:
        raise click.BadParameter(f"{value!r}: range min is above max", param_hint=hint)
    return got if len(got) == 2 else got[0]


@main.command("generate")
@click.option("--n", "count", type=click.IntRange(1, 256), default=16, show_default=True, help="faces")
@click.option("--eyes", metavar="V|MIN:MAX", help="0 closed … 1 open (default: random)")
@click.option("--mouth", metavar="V|MIN:MAX", help="0 closed … 1 open")
@click.option("--hair-color", "hair_color", metavar="V|MIN:MAX", help="0 light … 1 dark")
@click.option("--background", metavar="V|MIN:MAX", help="0 dark … 1 bright")
@click.option("--head", metavar="V|MIN:MAX", help="0 turned left, 0.5 frontal, 1 right")
@click.option("--temperature", type=click.FloatRange(0, MAX_TEMPERATURE), default=DEFAULT_TEMPERATURE, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--oversample", type=click.IntRange(1, 8), default=DEFAULT_OVERSAMPLE, show_default=True,
              help="each face the most realistic and faithful of k candidates (k × the cost)")
@click.option("--retouch/--no-retouch", default=True, show_default=True)
@click.option("--allow-partial", is_flag=True, help="answer even if the critic or a checker is down")
@pipeline_grpc_option
@click.option("--http", "http_url", metavar="URL", help="use HTTP instead, e.g. http://127.0.0.1:3000")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("faces.png"), show_default=True,
              callback=_image_path, help="the grid image; a JSON report is written beside it")
@click.option("--zoom", type=click.IntRange(1, 8), default=2, show_default=True)
def generate_cmd(count, eyes, mouth, hair_color, background, head, temperature, seed, oversample, retouch,
                 allow_partial, grpc_target, http_url, out, zoom) -> None:
    """Generate faces through the pipeline and save them as one grid PNG (plus a JSON report)."""
    import json

    wanted = {n: _condition(v, n) for n, v in zip(CONDITION_OPTIONS, (eyes, mouth, hair_color, background, head),
                                                  strict=True)}
    if http_url:
        faces = _generate_http(http_url, wanted, count, temperature, seed, oversample, retouch, allow_partial)
    else:
        faces = _generate_grpc(grpc_target, wanted, count, temperature, seed, oversample, retouch, allow_partial)
    _grid([f.pop("png_bytes") for f in faces], out, zoom)
    report = out.with_suffix(".json")
    report.write_text(json.dumps(faces, indent=2) + "\n")
    for f in faces:
        realness = f"{f['realness_before']:.2f}→{f['realness_after']:.2f}" if f.get("realness_after") is not None else "n/a"
        err = f"{f['condition_error']:.3f}" if f.get("condition_error") is not None else "n/a"
        pf = f"{f['p_female']:.2f}" if f.get("p_female") is not None else "n/a"
        missing = f" (missing: {', '.join(f['missing'])})" if f.get("missing") else ""
        click.echo(f"seed {f['seed']}: realness {realness}, condition error {err}, P(female) {pf}{missing}")
    click.echo(f"wrote {out} ({len(faces)} faces) and {report}")


def _generate_grpc(target, wanted, count, temperature, seed, oversample, retouch, allow_partial) -> list[dict]:
    import grpc

    from services.core.proto import pb, rpc
    from services.core.wire import to_json

    conds = {}
    for name, v in wanted.items():
        if isinstance(v, tuple):
            conds[name] = pb.ConditionRequest(range=pb.Range(min=v[0], max=v[1]))
        elif v is not None:
            conds[name] = pb.ConditionRequest(value=v)
    req = pb.GenerateRequest(conditions=pb.ConditionsRequest(**conds), count=count, temperature=temperature, seed=seed,
                             oversample=oversample, retouch=retouch, allow_partial=allow_partial)
    with grpc.insecure_channel(target) as ch:
        try:
            resp = rpc.GenerationServiceStub(ch).Generate(req, timeout=120)
        except grpc.RpcError as exc:
            raise click.ClickException(f"{exc.code().name}: {exc.details()}") from None
    return _with_png_bytes([to_json(f) for f in resp.faces])


def _generate_http(url, wanted, count, temperature, seed, oversample, retouch, allow_partial) -> list[dict]:
    import httpx

    conds = {n: ({"min": v[0], "max": v[1]} if isinstance(v, tuple) else v) for n, v in wanted.items()}
    body = {"conditions": conds, "count": count, "temperature": temperature, "seed": seed, "oversample": oversample,
            "retouch": retouch, "allow_partial": allow_partial}
    with _http_errors(url):
        r = httpx.post(f"{url.rstrip('/')}/generate", json=body, timeout=120)
    if r.status_code != 200:
        raise click.ClickException(f"HTTP {r.status_code}: {r.text[:500]}")
    return _with_png_bytes(r.json()["faces"])


def _with_png_bytes(faces: list[dict]) -> list[dict]:
    """Faces as both transports answer them (the proto's JSON), each PNG decoded for the grid."""
    import base64

    for f in faces:
        f["png_bytes"] = base64.b64decode(f.pop("png"))
    return faces


def _grid(pngs: list[bytes], out: Path, zoom: int) -> None:
    import math

    from PIL import Image

    faces = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    w, h = faces[0].size
    cols = min(8, len(faces))
    rows = math.ceil(len(faces) / cols)
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, face in enumerate(faces):
        grid.paste(face, (w * (i % cols), h * (i // cols)))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.resize((grid.width * zoom, grid.height * zoom), Image.Resampling.NEAREST).save(out)


def _unit(ctx, param, value):
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"{value} is not in [0, 1]")
    return value


@main.command("edit")
@click.argument("face", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--eyes", type=float, callback=_unit, help="0 closed … 1 open")
@click.option("--mouth", type=float, callback=_unit, help="0 closed … 1 open")
@click.option("--hair-color", "hair_color", type=float, callback=_unit, help="0 light … 1 dark")
@click.option("--background", type=float, callback=_unit, help="0 dark … 1 bright")
@click.option("--head", type=float, callback=_unit, help="0 turned left, 0.5 frontal, 1 right")
@click.option("--sweep", type=click.Choice(CONDITION_OPTIONS), help="write a strip: this condition from 0 to 1")
@click.option("--steps", type=click.IntRange(2, 16), default=6, show_default=True, help="faces in a --sweep strip")
@click.option("--keep-groups", type=click.IntRange(min=0), default=None,
              help="latent groups kept from the face, coarsest first (default: all; fewer = freer, less faithful)")
@click.option("--retouch/--no-retouch", default=True, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@pipeline_grpc_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("edited.png"), show_default=True,
              callback=_image_path, help="the edited face (with --sweep: the strip, the input face first)")
@click.option("--zoom", type=click.IntRange(1, 8), default=2, show_default=True)
def edit_cmd(face, eyes, mouth, hair_color, background, head, sweep, steps, keep_groups, retouch, seed, grpc_target,
             out, zoom) -> None:
    """Edit your own FACE: change the conditions you give, keep the rest (and who it is)."""
    import grpc

    from services.core.proto import pb, rpc

    changes = {n: v for n, v in zip(CONDITION_OPTIONS, (eyes, mouth, hair_color, background, head), strict=True)
               if v is not None}
    if bool(changes) == bool(sweep):
        raise click.UsageError("give the conditions to change (e.g. --eyes 0.9), or --sweep CONDITION")
    data = face.read_bytes()
    targets = [{sweep: i / (steps - 1)} for i in range(steps)] if sweep else [changes]
    pngs, rows = [], []
    with grpc.insecure_channel(grpc_target) as ch:
        stub = rpc.GenerationServiceStub(ch)
        for target in targets:
            req = pb.EditFaceRequest(image=pb.Image(encoded=data), target=pb.Conditions(**target), retouch=retouch,
                                     seed=seed)
            if keep_groups is not None:
                req.keep_groups = keep_groups
            try:
                resp = stub.Edit(req, timeout=60)
            except grpc.RpcError as exc:
                raise click.ClickException(f"{exc.code().name}: {exc.details()}") from None
            pngs.append(resp.png)
            rows.append(resp)
    if sweep:  # the strip starts with the input face, at the edits' size
        from PIL import Image

        source = io.BytesIO()
        Image.open(face).convert("RGB").resize(Image.open(io.BytesIO(pngs[0])).size).save(source, "PNG")
        pngs = [source.getvalue(), *pngs]
    _grid(pngs, out, zoom)
    for target, r in zip(targets, rows, strict=True):
        said = [f"{n} {getattr(r.measured_before, n):.2f} → asked {v:.2f}, measured {getattr(r.measured_after, n):.2f}"
                for n, v in target.items()]
        realness = f"; realness {r.realness_after:.2f}" if r.HasField("realness_after") else ""
        click.echo("; ".join(said) + realness)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
