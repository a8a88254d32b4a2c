"""The hand-labelling sheet behind `facegen-train label-ui`: the images a person labels (the
first N female images by file name), what is already known about each, and the sheet on disk,
<data>/hand_labels.csv, in the format the attribute training reads.

Every sheet image has a row; a row is labelled once all five conditions are filled, blank until
then. A confirmation rewrites the file from what is on disk now plus that one row, under a lock
(a thread lock and an flock, so two tabs or two servers cannot lose each other's rows), into a
temporary file that replaces the sheet in one rename: a crash leaves the old sheet or the new.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.shared.conditions import CONDITIONS
from services.shared.dataset import Dataset, Record
from services.shared.labels import complete, first_n_female, read_hand_labels, write_conditions_csv

SHEET = "hand_labels.csv"
DEFAULT_VALUE = 0.5  # where nothing is known: the middle of the slider


@dataclass(frozen=True)
class Item:
    index: int
    record: Record
    suggested: dict[str, float]  # the slider's starting point until the row is labelled
    sources: dict[str, str]  # per condition: "dataset", "model" or "default"


Suggest = Callable[[list[Record]], dict[str, dict[str, float]]]  # records → {file: conditions}


class Sheet:
    def __init__(self, ds: Dataset, n: int, suggest: Suggest | None = None, path: Path | None = None) -> None:
        self.path = path or ds.root / SHEET
        female = {r.file: r for r in ds.records if r.female}
        files = first_n_female(female, n)
        if not files:
            raise ValueError(f"{ds.root}: no female-labelled images to label")
        records = [female[f] for f in files]
        predicted = suggest(records) if suggest is not None else {}
        self.items = [_item(i, r, predicted.get(r.file, {})) for i, r in enumerate(records)]
        self._thread_lock = threading.Lock()
        self.read()  # a sheet that cannot be read is reported now, not at the first save

    @property
    def files(self) -> list[str]:
        return [it.record.file for it in self.items]

    def read(self) -> dict[str, dict[str, float | None]]:
        return read_hand_labels(self.path) if self.path.exists() else {}

    def labelled(self) -> dict[str, dict[str, float]]:
        """The sheet's labelled rows as they are on disk now (another tab may have added some)."""
        return self._on_sheet(self.read())

    def _on_sheet(self, rows) -> dict[str, dict[str, float]]:
        on_sheet = set(self.files)
        return {f: v for f, v in complete(rows).items() if f in on_sheet}

    def save(self, index: int, values: Mapping[str, float]) -> dict[str, dict[str, float]]:
        """Label item `index` with `values` (all five, each in [0, 1]); the labelled rows after."""
        if not 0 <= index < len(self.items):
            raise IndexError(f"no image {index} on this sheet of {len(self.items)}")
        row = check_values(values)
        with self._thread_lock, _file_lock(self.path):
            rows = self.read()
            for f in self.files:  # every sheet image has a row, blank until labelled
                rows.setdefault(f, dict.fromkeys(CONDITIONS))
            rows[self.items[index].record.file] = row
            _write_atomically(self.path, rows)
        return self._on_sheet(rows)  # what was just written, under the lock: no second read


def check_values(values: Mapping[str, float]) -> dict[str, float]:
    missing = [c for c in CONDITIONS if c not in values]
    unknown = sorted(set(values) - set(CONDITIONS))
    if missing or unknown:
        raise ValueError(f"a label needs exactly {', '.join(CONDITIONS)}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unknown {', '.join(unknown)}" if unknown else ""))
    out = {}
    for c in CONDITIONS:
        v = values[c]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise ValueError(f"{c} must be a number in [0, 1], got {v!r}")
        out[c] = round(float(v), 6)
    return out


def _item(index: int, record: Record, predicted: Mapping[str, float]) -> Item:
    suggested, sources = {}, {}
    for c in CONDITIONS:
        if c in record.conditions:
            suggested[c], sources[c] = float(record.conditions[c]), "dataset"
        elif c in predicted:
            suggested[c], sources[c] = float(predicted[c]), "model"
        else:
            suggested[c], sources[c] = DEFAULT_VALUE, "default"
    return Item(index, record, suggested, sources)


def model_suggestions(export_dir: Path) -> Suggest:
    """The attribute model's predictions (an exported model under ONNX Runtime)."""
    from training.data.loader import load_images
    from training.select import OnnxImageModel

    model = OnnxImageModel(export_dir)

    def suggest(records: list[Record]) -> dict[str, dict[str, float]]:
        images, loaded, _ = load_images(records, model.preprocess)
        pred = np.clip(model(images), 0.0, 1.0) if len(loaded) else []
        return {r.file: dict(zip(CONDITIONS, map(float, p), strict=True)) for r, p in zip(loaded, pred, strict=True)}

    return suggest


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_atomically(path: Path, rows) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_conditions_csv(tmp, rows)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the sheet private to this user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
