"""CelebA: img_align_celeba/ + list_attr_celeba.txt (+ list_eval_partition.txt).

Gender comes from the `Male` attribute. CelebA's 40 binary attributes give coarse values for
three of the five conditions; `background` and `head` have no attribute and must come from the
attribute model (they are reported in Dataset.missing_conditions).
"""

from __future__ import annotations

from pathlib import Path

from services.shared.dataset import Dataset, DatasetError, Problem, Record, find_images
from services.shared.images import file_problem

IMAGES = "img_align_celeba"
ATTRS = "list_attr_celeba.txt"
PARTITION = "list_eval_partition.txt"
SPLITS = {"0": "train", "1": "val", "2": "test"}

# Coarse condition values from binary attributes (attribute present → value). Where none of an
# image's attributes applies, the condition stays unknown for that image.
EYES = {"Narrow_Eyes": 0.3}, 0.7  # narrow → fairly closed; otherwise a typical open eye
MOUTH = {"Mouth_Slightly_Open": 0.6}, 0.1
HAIR = {"Black_Hair": 0.95, "Brown_Hair": 0.65, "Gray_Hair": 0.3, "Blond_Hair": 0.1}
MISSING = ("background", "head")


def _find(root: Path, name: str) -> Path | None:
    """The annotation file at the root or in the official download's Anno/ or Eval/ folder."""
    for p in (root / name, root / "Anno" / name, root / "Eval" / name):
        if p.is_file():
            return p
    return None


def looks_like(root: Path) -> bool:
    return (root / IMAGES).is_dir() or _find(root, ATTRS) is not None


def _parse_attrs(path: Path) -> tuple[list[str], dict[str, list[int]]]:
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and an attribute-name line")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DatasetError(f"{path}:1: expected the number of images, got {lines[0]!r}") from None
    names = lines[1].split()
    if "Male" not in names:
        raise DatasetError(f"{path}:2: no 'Male' attribute among {len(names)} names")
    rows: dict[str, list[int]] = {}
    for i, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1 or any(v not in ("1", "-1") for v in parts[1:]):
            raise DatasetError(f"{path}:{i}: expected a file name and {len(names)} values of 1/-1")
        rows[parts[0]] = [int(v) for v in parts[1:]]
    if len(rows) != count:
        raise DatasetError(f"{path}: header says {count} images, found {len(rows)} rows")
    return names, rows


def _conditions(attrs: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for cond, (table, default) in (("eyes", EYES), ("mouth", MOUTH)):
        out[cond] = next((v for a, v in table.items() if attrs.get(a) == 1), default)
    hair = [v for a, v in HAIR.items() if attrs.get(a) == 1]
    if len(hair) == 1:  # none, or contradictory labels: unknown
        out["hair_color"] = hair[0]
    return out


def open_celeba(root: Path, verify: bool = True) -> Dataset:
    images = root / IMAGES
    attrs_path = _find(root, ATTRS)
    if not images.is_dir():
        raise DatasetError(f"{root}: CelebA layout needs the folder {images}")
    if attrs_path is None:
        raise DatasetError(f"{root}: CelebA layout needs {ATTRS} (at the root or in Anno/)")
    names, rows = _parse_attrs(attrs_path)
    splits: dict[str, str] = {}
    if (part := _find(root, PARTITION)) is not None:
        for i, line in enumerate(part.read_text().splitlines(), start=1):
            parts = line.split()
            if parts and (len(parts) != 2 or parts[1] not in SPLITS):
                raise DatasetError(f"{part}:{i}: expected '<file> 0|1|2'")
            if parts:
                splits[parts[0]] = SPLITS[parts[1]]

    paths, problems = find_images(images, recursive=False)
    on_disk = {p.name: p for p in paths}
    records: list[Record] = []
    for name, values in sorted(rows.items()):
        p = on_disk.pop(name, None)
        if p is None:
            problems.append(Problem(str(images / name), f"listed in {ATTRS} but missing"))
            continue
        if verify and (reason := file_problem(p)):
            problems.append(Problem(str(p), reason))
            continue
        attrs = dict(zip(names, values, strict=True))
        records.append(
            Record(
                file=f"{IMAGES}/{name}",
                path=p,
                female=attrs["Male"] == -1,
                conditions=_conditions(attrs),
                split=splits.get(name),
            )
        )
    problems += [Problem(str(p), f"not listed in {ATTRS}") for p in on_disk.values()]
    return Dataset(
        root=root, layout="celeba", records=tuple(records), problems=tuple(problems), missing_conditions=MISSING
    )
