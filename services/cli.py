"""`facegen`: the client command line for the running services (torch-free)."""

from __future__ import annotations

import csv
import io
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Call the facegen services."""


def _count_files(root: Path) -> int | None:
    if not root.is_dir():
        return None
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


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

    rows: list[list[str]] = []
    summary = None
    with grpc.insecure_channel(target) as ch:
        stub = rpc.FilterServiceStub(ch)
        try:
            for event in stub.FilterDataset(pb.FilterDatasetRequest(dataset=dataset, threshold=threshold, job_id=job_id)):
                if event.WhichOneof("event") == "decision":
                    d = event.decision
                    p = f"{d.p_female:.6f}" if d.HasField("p_female") else ""
                    rows.append([d.file, p, str(int(d.kept)), d.reason])
                    bar.update(1)
                else:
                    summary = event.summary
        except grpc.RpcError as exc:
            raise click.ClickException(f"{exc.code().name}: {exc.details()}") from exc
    # a resumed job streams only what was left: the server's CSV holds every file
    path = Path(summary.selection_csv)
    if path.exists():
        text = path.read_text()
    else:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["file", "p_female", "kept", "reason"])
        w.writerows(sorted(rows))
        text = buf.getvalue()
    fields = ("total", "kept", "below_threshold", "male_folder", "unreadable")
    return {f: getattr(summary, f) for f in fields}, text


def _filter_http(url: str, dataset: Path, threshold: float, job_id: str, upload: bool, bar):
    import httpx

    url = url.rstrip("/")
    job_id = job_id or f"cli-{uuid.uuid4().hex[:12]}"
    with httpx.Client(timeout=60) as client:
        if upload:
            if not dataset.is_dir():
                raise click.ClickException(f"{dataset}: not a local folder")
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


if __name__ == "__main__":
    main()
