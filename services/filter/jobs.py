"""Batch filtering of a dataset on the server, resumable after a crash.

A job lists a dataset folder by the layout rules training uses (the seed's Female/ Male/
unlabeled/, CelebA, or any folder of images as unlabelled: services/shared/dataset.py), decides
every file by the shared selection rule and writes the same selection.csv as `facegen-train
select` (services/shared/selection.py). Decisions are appended to a checkpoint (JSON lines,
flushed per chunk); a job resubmitted after the process was killed skips what is recorded there,
so the final CSV lists every file exactly once. Decoding the next chunk overlaps inference on the
current one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tarfile
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from services.core.errors import BadRequest, Forbidden
from services.shared import images as imgs
from services.shared.dataset import Dataset, DatasetError
from services.shared.layouts import has_layout, open_dataset
from services.shared.selection import (
    DEFAULT_THRESHOLD,
    Decision,
    decide,
    problem_decisions,
    unreadable,
    write_selection,
)

CHUNK = 64
JOB_FORMAT = 2  # job.json's format: 2 lists files by the shared layout rules and records the total

Score = Callable[[np.ndarray], Awaitable[np.ndarray]]


def resolve_dataset(path: str, allowed_roots: list[Path]) -> Path:
    """The real path of `path` if it is a folder inside an allowed root (symlinks resolved)."""
    if not path:
        raise BadRequest("no dataset path given")
    if "\x00" in path:
        raise BadRequest("the dataset path holds a NUL byte")
    real = Path(path).resolve()
    if not any(real == root or root in real.parents for root in (r.resolve() for r in allowed_roots)):
        roots = ", ".join(str(r) for r in allowed_roots) or "none configured"
        raise Forbidden(f"{path} is outside the allowed dataset roots ({roots}); set FACEGEN_ALLOWED_ROOTS")
    if not real.is_dir():
        raise BadRequest(f"{path}: dataset folder not found")
    return real


def is_job_id(job_id: str) -> bool:
    """Whether `job_id` is safe as one folder name under the jobs folder (no separators, no "..")."""
    return job_id.replace("-", "").replace("_", "").isalnum() and len(job_id) <= 64


def check_job_id(job_id: str) -> str:
    """`job_id` if is_job_id, else BadRequest."""
    if not is_job_id(job_id):
        raise BadRequest(f"job_id may hold letters, digits, '-' and '_' only (at most 64), got {job_id[:80]!r}")
    return job_id


def list_dataset(root: Path) -> Dataset:
    """The files a job decides on: the dataset by the shared layout rules, any folder of images
    counting as unlabelled; a malformed layout is the caller's to fix. Headers are not read here
    (`_decode` reads each file once, and refuses links that lead out before opening anything);
    the reasons for a bad file are the ones the listing's header check would give."""
    try:
        return open_dataset(root, verify=False, any_folder=True)
    except DatasetError as exc:
        raise BadRequest(str(exc)) from exc


def job_threshold(threshold: float) -> float:
    """The threshold a job runs with: 0 (unset) is the default, and 6 decimals are kept, so that
    gRPC's float32 0.9 (0.89999998) and HTTP's 0.9 are one job that keeps the same faces."""
    return round(float(threshold or DEFAULT_THRESHOLD), 6)


def job_id_for(source: Path | str, threshold: float, model_sha: str) -> str:
    """Deterministic: the same dataset (a folder, or an archive by its hash), threshold and model
    resume the same job."""
    return hashlib.sha256(f"{source}|{job_threshold(threshold):.6f}|{model_sha}".encode()).hexdigest()[:16]


OUTSIDE = "a link that leads outside the dataset"


def _decode(root: Path, file: str, height: int, width: int) -> np.ndarray | str:
    """A file of the dataset at the model's size, or why not. `root` is the dataset's real path:
    a symbolic link is followed only when its target lies inside it, and a link that leads out is
    refused before anything is opened, with one reason whether or not its target exists (a
    different error would tell a caller which files exist elsewhere)."""
    try:
        if root not in (root / file).resolve().parents:
            return OUTSIDE
        return imgs.fit(imgs.read(root / file), height, width)  # read checks the size before reading
    except RuntimeError:  # a symlink loop (Python 3.11 raises RuntimeError from resolve)
        return OUTSIDE
    except imgs.InvalidImage as exc:
        return str(exc)


def read_meta(job_dir: Path) -> dict:
    """A job's job.json, refused with a clear error when an older facegen wrote it."""
    meta = json.loads((job_dir / "job.json").read_text())
    if meta.get("format") != JOB_FORMAT:
        raise BadRequest(f"job {job_dir.name} was written by an older facegen (job format {meta.get('format', 1)}, "
                         f"this one reads {JOB_FORMAT}: files are now listed by the dataset layout rules "
                         f"training uses); remove {job_dir} or choose another job_id")
    return meta


def read_decisions(checkpoint: Path) -> dict[str, Decision]:
    """Decisions recorded so far; a line torn by a crash mid-write is ignored (redone)."""
    out: dict[str, Decision] = {}
    if checkpoint.exists():
        for line in checkpoint.read_text().splitlines():
            try:
                d = Decision(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue
            out[d.file] = d
    return out


def job_progress(job_dir: Path) -> dict:
    """How far a job is, read from its files alone: nothing is written and the dataset is not
    listed again (its total is recorded once the job has listed it; until then it is None)."""
    meta = read_meta(job_dir)
    return {"total": meta.get("total"), "done": len(read_decisions(job_dir / "decisions.jsonl")),
            "complete": (job_dir / "selection.csv").exists()}


class DatasetJob:
    def __init__(self, jobs_dir: Path, job_id: str, root: Path, threshold: float, chunk: int = CHUNK) -> None:
        threshold = job_threshold(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise BadRequest(f"threshold must be in [0, 1], got {threshold}")
        self.root, self.threshold, self.job_id, self.chunk = root, threshold, job_id, max(1, chunk)
        self.dir = jobs_dir / job_id
        self.checkpoint = self.dir / "decisions.jsonl"
        self.result: dict | None = None  # the summary, once run() has written selection.csv
        self.csv_path = self.dir / "selection.csv"
        self.meta_path = self.dir / "job.json"
        if self.meta_path.exists():
            self.meta = read_meta(self.dir)
            # normalised as well: gRPC's float32 0.9 is 0.8999999761581421
            if self.meta.get("dataset") != str(root) or job_threshold(self.meta.get("threshold", -1)) != threshold:
                raise BadRequest(f"job {job_id} exists for a different dataset or threshold")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._write_meta({"format": JOB_FORMAT, "dataset": str(root), "threshold": threshold})

    def _write_meta(self, meta: dict) -> None:
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(self.meta_path)
        self.meta = meta

    def done(self) -> dict[str, Decision]:
        return read_decisions(self.checkpoint)

    async def run(self, score: Score, height: int, width: int) -> AsyncIterator[Decision]:
        """Yield a Decision per file not yet decided, checkpointing each chunk; then write the CSV
        and keep its summary in `self.result`."""
        # listing, reading the checkpoint and writing the CSV touch every file of a set that may
        # hold 200,000: in threads, so the service's event loop keeps answering meanwhile
        ds = await asyncio.to_thread(list_dataset, self.root)
        skipped = problem_decisions(ds)
        files = sorted([r.file for r in ds.records] + [d.file for d in skipped])
        if self.meta.get("total") != len(files):
            await asyncio.to_thread(self._write_meta, {**self.meta, "total": len(files)})
        done = await asyncio.to_thread(self.done)
        todo = [r for r in ds.records if r.file not in done]
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(2, thread_name_prefix="decode") as pool, self.checkpoint.open("a") as ck:

            def record(batch: list[Decision]) -> None:
                ck.write("".join(json.dumps(asdict(d)) + "\n" for d in batch))
                ck.flush()
                os.fsync(ck.fileno())

            fresh = [d for d in skipped if d.file not in done]  # the layout already said why: no decoding
            if fresh:
                record(fresh)
                for d in fresh:
                    yield d
            real_root = self.root.resolve()  # once: _decode compares every file's real path with it

            def decode_chunk(chunk):
                return list(pool.map(lambda r: _decode(real_root, r.file, height, width), chunk))

            chunks = [todo[i : i + self.chunk] for i in range(0, len(todo), self.chunk)]
            pending = loop.run_in_executor(None, decode_chunk, chunks[0]) if chunks else None
            for k, chunk in enumerate(chunks):
                decoded = await pending
                # decode the next chunk while this one is scored
                pending = loop.run_in_executor(None, decode_chunk, chunks[k + 1]) if k + 1 < len(chunks) else None
                good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
                p = await score(np.stack([decoded[i] for i in good])) if good else np.zeros(0)
                scores = dict(zip(good, p.tolist(), strict=True))
                batch = [decide(r.file, r.female, scores[i], self.threshold) if i in scores else unreadable(r.file, decoded[i])
                         for i, r in enumerate(chunk)]
                record(batch)
                for d in batch:
                    yield d
        self.result = await asyncio.to_thread(self.write_csv, files)

    def write_csv(self, files: list[str]) -> dict[str, int]:
        done = self.done()
        missing = [f for f in files if f not in done]
        if missing:
            raise RuntimeError(f"{len(missing)} files undecided, e.g. {missing[0]}")
        tmp = self.csv_path.with_suffix(".tmp")
        write_selection(tmp, [done[f] for f in files])
        tmp.replace(self.csv_path)
        return self.summary(files, done)

    def summary(self, files: list[str] | None = None, done: dict[str, Decision] | None = None) -> dict:
        done = done if done is not None else self.done()
        if files is not None:  # a checkpoint may hold files a re-listing no longer has
            done = {f: done[f] for f in files}
        reasons = [d.reason.split(":")[0] for d in done.values()]
        return {
            "job_id": self.job_id,
            "total": len(files) if files is not None else len(done),
            "kept": sum(d.kept for d in done.values()),
            "below_threshold": reasons.count("below_threshold"),
            "male_folder": reasons.count("male_folder"),
            "unreadable": reasons.count("unreadable"),
            "selection_csv": str(self.csv_path),
            "threshold": self.threshold,
        }


# ---- uploaded archives ------------------------------------------------------------------------
MAX_ENTRIES = 100_000
MAX_UNPACKED = 4 * 2**30


def archive_root(unpacked: Path) -> Path:
    """The dataset inside an unpacked upload: `zip -r set.zip set/` puts everything under one
    top folder, whose Female/ and Male/ must still count as the layout (else Male/ images would be
    scored instead of left out). Descends while a folder holds just one folder and no layout
    folder; macOS's __MACOSX/ and hidden entries do not count."""
    root = unpacked
    while not has_layout(root):
        entries = [e for e in root.iterdir() if not e.name.startswith((".", "__MACOSX"))]
        if len(entries) != 1 or not entries[0].is_dir():
            break
        root = entries[0]
    return root


def extract_archive(archive: Path, dest: Path, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_UNPACKED) -> Path:
    """Unpack a zip or tar upload into dest, refusing path traversal, links and size bombs."""
    dest.mkdir(parents=True, exist_ok=True)
    real_dest = dest.resolve()

    def safe(name: str) -> Path:
        target = (real_dest / name).resolve()
        if name.startswith(("/", "\\")) or ".." in Path(name).parts or real_dest not in target.parents:
            raise BadRequest(f"archive entry {name!r} points outside the archive (path traversal)")
        return target

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            _check_budget(len(infos), sum(i.file_size for i in infos), max_entries, max_bytes)
            _check_entries([(i.filename, i.file_size) for i in infos])
            for info in infos:
                target = safe(info.filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as out:
                    copied = _copy_limited(src, out, info.file_size)
                if copied != info.file_size:
                    raise BadRequest(f"archive entry {info.filename!r} is larger than its header says")
        return dest
    if not tarfile.is_tarfile(archive):
        raise BadRequest("upload is neither a zip nor a tar archive")
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:
            if m.issym() or m.islnk() or m.isdev():
                raise BadRequest(f"archive entry {m.name!r} is a link or device; only files and folders are accepted")
            safe(m.name)
        files = [m for m in members if m.isfile()]
        _check_budget(len(files), sum(m.size for m in files), max_entries, max_bytes)
        _check_entries([(m.name, m.size) for m in files])
        tf.extractall(dest, members=members, filter="data")
    return dest


def _check_budget(entries: int, size: int, max_entries: int, max_bytes: int) -> None:
    if entries > max_entries:
        raise BadRequest(f"archive has {entries} entries; the limit is {max_entries}")
    if size > max_bytes:
        raise BadRequest(f"archive unpacks to {size} bytes; the limit is {max_bytes}")


def _check_entries(entries: list[tuple[str, int]]) -> None:
    """Every entry must fit the per-image limit and none may be both a file and a folder: checked
    on the headers, before anything is unpacked (two 1.9 GiB entries took 33 s to unpack first;
    a file `Female` beside `Female/ok.png` failed half-way with a 500)."""
    for name, size in entries:
        if size > imgs.MAX_BYTES:
            raise BadRequest(f"archive entry {name!r} is {size} bytes; an image is at most {imgs.MAX_BYTES}")
    files = {n.rstrip("/") for n, _ in entries}
    for name, _ in entries:
        parts = Path(name).parts
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in files:
                raise BadRequest(f"archive holds {folder!r} both as a file and as the folder of {name!r}")


def _copy_limited(src, out, limit: int) -> int:
    n = 0
    while chunk := src.read(1 << 20):
        n += len(chunk)
        if n > limit:
            return n
        out.write(chunk)
    return n
