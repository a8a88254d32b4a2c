"""Dataset layouts: the seed's folders, CelebA, label CSVs; malformed datasets and bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.shared.dataset import DatasetError
from services.shared.images import InvalidImage as UnreadableImage
from services.shared.images import read as load_rgb
from services.shared.labels import LabelFileError, first_n_female, read_conditions_csv
from services.shared.layouts import open_dataset


def _png(path: Path, value: int = 128, size=(20, 24), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)


def test_synth_dataset_opens_with_ground_truth(synth_root):
    ds = open_dataset(synth_root)
    assert ds.layout == "folders" and not ds.problems
    n_img = len(list(synth_root.rglob("*.png")))
    assert len(ds.records) == n_img == 160
    # folder labels agree with ground truth (no label noise configured)
    truth = {r["file"]: r for r in _csv_rows(synth_root / "labels.csv")}
    for r in ds.records:
        assert r.conditions, r.file
        if r.female is not None:
            assert r.female == (truth[r.file]["female"] == "1")
    assert any(r.female is None for r in ds.records) and any("/0" in r.file for r in ds.records if r.female is None)


def _csv_rows(path):
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_hand_labels_are_the_first_n_female_by_name(synth_root):
    hand = read_conditions_csv(synth_root / "hand_labels.csv")
    female = sorted(p.relative_to(synth_root).as_posix() for p in (synth_root / "Female").glob("*.png"))
    assert sorted(hand) == female[:20]
    truth = read_conditions_csv(synth_root / "labels.csv")
    for f, v in hand.items():
        assert v == pytest.approx(truth[f], abs=1e-6)


def test_first_n_female_orders_by_file_name():
    files = ["Female/b/003.png", "Female/a/010.png", "Female/001.png", "Female/002.jpg"]
    assert first_n_female(files, 3) == ["Female/001.png", "Female/002.jpg", "Female/b/003.png"]
    assert first_n_female(files, 0) == []
    assert first_n_female(files, 99) == sorted(files, key=lambda f: (f.rsplit("/", 1)[-1], f))
    with pytest.raises(ValueError):
        first_n_female(files, -1)


def test_real_photos_load_in_every_mode(real_root):
    ds = open_dataset(real_root)
    assert not ds.problems, ds.problems
    assert {r.female for r in ds.records} == {True, False, None}
    for r in ds.records:
        img = load_rgb(r.path)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def test_missing_folders_are_a_clear_error(tmp_path):
    _png(tmp_path / "Female" / "a.png")
    with pytest.raises(DatasetError, match="Male"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match="unrecognised"):
        open_dataset(tmp_path / "other")


def test_bad_files_are_reported_by_path_and_skipped(tmp_path):
    _png(tmp_path / "Female" / "ok.png")
    _png(tmp_path / "Male" / "grey.png", mode="L")
    (tmp_path / "Male" / "notes.txt").write_text("hello")
    (tmp_path / "Female" / "fake.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "Female" / "empty.png").write_bytes(b"")
    good = tmp_path / "unlabeled" / "x" / "y" / "deep.png"
    _png(good)
    trunc = tmp_path / "unlabeled" / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:40])
    ds = open_dataset(tmp_path)
    files = sorted(r.file for r in ds.records)
    assert "unlabeled/x/y/deep.png" in files and "Female/ok.png" in files and "Male/grey.png" in files
    reasons = {Path(p.path).name: p.reason for p in ds.problems}
    assert set(reasons) >= {"notes.txt", "fake.jpg", "empty.png"}
    assert "not an image" in reasons["notes.txt"]
    # a truncated file passes the header check but fails to decode: a clear error, not a crash
    if "trunc.png" not in reasons:
        with pytest.raises(UnreadableImage):
            load_rgb(trunc)


def test_load_rgb_refuses_decompression_bombs(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("L", (8000, 6000)).save(p)
    with pytest.raises(UnreadableImage, match="limits are"):
        load_rgb(p)


def _celeba(root: Path, src: Path, n: int = 6) -> list[str]:
    (root / "img_align_celeba").mkdir(parents=True)
    names = []
    for i, p in enumerate(sorted(src.glob("Female/*.png"))[:n]):
        name = f"{i + 1:06d}.jpg"
        Image.open(p).convert("RGB").resize((178, 218)).save(root / "img_align_celeba" / name)
        names.append(name)
    attrs = ["Black_Hair", "Blond_Hair", "Male", "Mouth_Slightly_Open", "Narrow_Eyes"]
    rows = [
        f"{names[0]} 1 -1 -1 1 -1",
        f"{names[1]} -1 1 1 -1 1",
        *(f"{nm} -1 -1 1 -1 -1" for nm in names[2:]),
    ]
    (root / "list_attr_celeba.txt").write_text(f"{len(rows)}\n{' '.join(attrs)}\n" + "\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{nm} {i % 3}\n" for i, nm in enumerate(names)))
    return names


def test_celeba_layout(tmp_path, synth_root):
    names = _celeba(tmp_path, synth_root)
    ds = open_dataset(tmp_path)
    assert ds.layout == "celeba" and not ds.problems
    assert set(ds.missing_conditions) == {"background", "head"}
    assert "background" in ds.summary()
    r0, r1 = ds.records[0], ds.records[1]
    assert r0.file == f"img_align_celeba/{names[0]}" and r0.female is True and r1.female is False
    assert r0.conditions == {"eyes": 0.7, "mouth": 0.6, "hair_color": 0.95}
    assert r1.conditions == {"eyes": 0.3, "mouth": 0.1, "hair_color": 0.1}
    assert "hair_color" not in ds.records[2].conditions  # no hair attribute: unknown, not guessed
    assert [r.split for r in ds.records[:3]] == ["train", "val", "test"]


def test_celeba_malformed(tmp_path, synth_root):
    names = _celeba(tmp_path, synth_root)
    (tmp_path / "img_align_celeba" / names[3]).unlink()
    (tmp_path / "img_align_celeba" / "999999.jpg").write_bytes(b"junk")
    ds = open_dataset(tmp_path)
    reasons = {Path(p.path).name: p.reason for p in ds.problems}
    assert "missing" in reasons[names[3]] and "not listed" in reasons["999999.jpg"]
    attr = tmp_path / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    attr.write_text("\n".join([*lines[:3], lines[3] + " 1", *lines[4:]]) + "\n")
    with pytest.raises(DatasetError, match=r"list_attr_celeba.txt:4"):
        open_dataset(tmp_path)
    attr.unlink()
    with pytest.raises(DatasetError, match="list_attr_celeba"):
        open_dataset(tmp_path)


@pytest.mark.parametrize(
    "body, match",
    [
        ("file,eyes,mouth,hair_color,background\na.png,1,1,1,1\n", "missing column"),
        ("file,eyes,mouth,hair_color,background,head\na.png,1,1,1,1,1.5\n", r":2: head=1.5 is outside"),
        ("file,eyes,mouth,hair_color,background,head\na.png,x,1,1,1,1\n", "not a number"),
        ("file,eyes,mouth,hair_color,background,head\na.png,nan,1,1,1,1\n", "outside"),
        ("file,eyes,mouth,hair_color,background,head\na.png,1,1,1,1,1\na.png,0,0,0,0,0\n", ":3: duplicate"),
    ],
)
def test_label_csv_errors_name_file_and_line(tmp_path, body, match):
    p = tmp_path / "labels.csv"
    p.write_text(body)
    with pytest.raises(LabelFileError, match=match):
        read_conditions_csv(p)


def test_label_csv_attaches_conditions(tmp_path, synth_root):
    root = tmp_path / "ds"
    shutil.copytree(synth_root, root)
    ds = open_dataset(root)
    truth = read_conditions_csv(root / "labels.csv")
    for r in ds.records[:10]:
        assert r.conditions == truth[r.file]
