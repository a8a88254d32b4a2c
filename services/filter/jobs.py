"""Batch filtering of a dataset on the server, resumable after a crash.

A job scores every file under a dataset folder (the seed layout: Female/, Male/, unlabeled/ at
any depth) and ends with the same selection.csv as `facegen-train select`: one row per file,
sorted, `file,p_female,kept,reason`. Decisions are appended to a checkpoint (JSON lines,
flushed per chunk); a job resubmitted after the process was killed skips what is recorded there,
so the final CSV lists every file exactly once. Decoding the next chunk overlaps inference on the
current one.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import tarfile
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from services.core.errors import BadRequest, Forbidden
from services.shared import images as imgs

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
CHUNK = 64
DEFAULT_THRESHOLD = 0.9  # keep P(female) ≥ this when a request leaves it unset (0)

Score = Callable[[np.ndarray], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class Decision:
    file: str
    p_female: float | None
    kept: bool
    reason: str


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


LAYOUT_FOLDERS = ("Female", "Male", "unlabeled")


def list_files(root: Path) -> list[str]:
    """The files a job decides on, sorted: with the seed layout, every file under Female/, Male/
    and unlabeled/ (as `facegen-train select` sees it; labels and configs at the root are not
    images of the set); otherwise every file under root. Hidden files are skipped."""
    tops = [root / d for d in LAYOUT_FOLDERS if (root / d).is_dir()] or [root]
    out = []
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            out += [(Path(dirpath) / n).relative_to(root).as_posix() for n in filenames if not n.startswith(".")]
    return sorted(out)


def job_threshold(threshold: float) -> float:
    """The threshold a job runs with: 0 (unset) is the default, and 6 decimals are kept, so that
    gRPC's float32 0.9 (0.89999998) and HTTP's 0.9 are one job that keeps the same faces."""
    return round(float(threshold or DEFAULT_THRESHOLD), 6)


def job_id_for(source: Path | str, threshold: float, model_sha: str) -> str:
    """Deterministic: the same dataset (a folder, or an archive by its hash), threshold and model
    resume the same job."""
    return hashlib.sha256(f"{source}|{job_threshold(threshold):.6f}|{model_sha}".encode()).hexdigest()[:16]


OUTSIDE = "unreadable: a link that leads outside the dataset"


def _decode(root: Path, file: str, height: int, width: int) -> np.ndarray | str:
    """A file of the dataset at the model's size, or why not. `root` is the dataset's real path:
    a symbolic link is followed only when its target lies inside it, and a link that leads out is
    refused before anything is opened, with one reason whether or not its target exists (a
    different error would tell a caller which files exist elsewhere)."""
    if Path(file).suffix.lower() not in IMAGE_SUFFIXES:
        return "unreadable: not an image file"
    try:
        if root not in (root / file).resolve().parents:
            return OUTSIDE
        size = (root / file).stat().st_size
        if size > imgs.MAX_BYTES:  # before reading it: a 1.9 GiB file was read whole first
            return f"unreadable: the file is {size} bytes; an image is at most {imgs.MAX_BYTES}"
        return imgs.fit(imgs.decode((root / file).read_bytes()), height, width)
    except RuntimeError:  # a symlink loop (Python 3.11 raises RuntimeError from resolve)
        return OUTSIDE
    except (imgs.InvalidImage, OSError) as exc:
        return f"unreadable: {exc}"


class DatasetJob:
    def __init__(self, jobs_dir: Path, job_id: str, root: Path, threshold: float, chunk: int = CHUNK) -> None:
        threshold = job_threshold(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise BadRequest(f"threshold must be in [0, 1], got {threshold}")
        self.root, self.threshold, self.job_id, self.chunk = root, threshold, job_id, max(1, chunk)
        self.dir = jobs_dir / job_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint = self.dir / "decisions.jsonl"
        self.result: dict | None = None  # the summary, once run() has written selection.csv
        self.csv_path = self.dir / "selection.csv"
        meta = {"dataset": str(root), "threshold": threshold}
        meta_path = self.dir / "job.json"
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            # normalised as well: jobs written before thresholds were hold gRPC's float32
            # (0.8999999761581421 for 0.9)
            if old.get("dataset") != meta["dataset"] or job_threshold(old.get("threshold", -1)) != threshold:
                raise BadRequest(f"job {job_id} exists for a different dataset or threshold")
        meta_path.write_text(json.dumps(meta))

    def done(self) -> dict[str, Decision]:
        """Decisions recorded so far; a line torn by a crash mid-write is ignored (redone)."""
        out: dict[str, Decision] = {}
        if self.checkpoint.exists():
            for line in self.checkpoint.read_text().splitlines():
                try:
                    d = Decision(**json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    continue
                out[d.file] = d
        return out

    def progress(self) -> dict[str, int]:
        total = len(list_files(self.root))
        return {"total": total, "done": len(self.done())}

    async def run(self, score: Score, height: int, width: int) -> AsyncIterator[Decision]:
        """Yield a Decision per file not yet decided, checkpointing each chunk; then write the CSV
        and keep its summary in `self.result`."""
        # listing, reading the checkpoint and writing the CSV touch every file of a set that may
        # hold 200,000: in threads, so the service's event loop keeps answering meanwhile
        files = await asyncio.to_thread(list_files, self.root)
        done = await asyncio.to_thread(self.done)
        todo = [f for f in files if f not in done]
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(2, thread_name_prefix="decode") as pool, self.checkpoint.open("a") as ck:

            real_root = self.root.resolve()  # once: _decode compares every file's real path with it

            def decode_chunk(chunk: list[str]):
                return list(pool.map(lambda f: _decode(real_root, f, height, width), chunk))

            chunks = [todo[i : i + self.chunk] for i in range(0, len(todo), self.chunk)]
            pending = loop.run_in_executor(None, decode_chunk, chunks[0]) if chunks else None
            for k, chunk in enumerate(chunks):
                decoded = await pending
                # decode the next chunk while this one is scored
                pending = loop.run_in_executor(None, decode_chunk, chunks[k + 1]) if k + 1 < len(chunks) else None
                good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
                p = await score(np.stack([decoded[i] for i in good])) if good else np.zeros(0)
                scores = dict(zip(good, p.tolist(), strict=True))
                batch = [self._decide(f, scores.get(i), decoded[i]) for i, f in enumerate(chunk)]
                ck.write("".join(json.dumps(asdict(d)) + "\n" for d in batch))
                ck.flush()
                os.fsync(ck.fileno())
                for d in batch:
                    yield d
        self.result = await asyncio.to_thread(self.write_csv, files)

    def _decide(self, file: str, p: float | None, decoded) -> Decision:
        if p is None:
            return Decision(file, None, False, decoded)
        if file.split("/", 1)[0] == "Male":  # the seed author never kept a labelled male
            return Decision(file, p, False, "male_folder")
        kept = p >= self.threshold
        return Decision(file, p, kept, "kept" if kept else "below_threshold")

    def write_csv(self, files: list[str]) -> dict[str, int]:
        done = self.done()
        missing = [f for f in files if f not in done]
        if missing:
            raise RuntimeError(f"{len(missing)} files undecided, e.g. {missing[0]}")
        tmp = self.csv_path.with_suffix(".tmp")
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "p_female", "kept", "reason"])
            for f in files:
                d = done[f]
                w.writerow([f, "" if d.p_female is None else f"{d.p_female:.6f}", int(d.kept), d.reason])
        tmp.replace(self.csv_path)
        return self.summary(files, done)

    def summary(self, files: list[str] | None = None, done: dict[str, Decision] | None = None) -> dict:
        done = done if done is not None else self.done()
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
    while not any((root / d).is_dir() for d in LAYOUT_FOLDERS):
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
