from __future__ import annotations

import csv

import numpy as np
from click.testing import CliRunner
from PIL import Image

from training.cli import main


def test_synth_cli_writes_the_seed_layout_deterministically(tmp_path):
    runner = CliRunner()
    for name in ("a", "b"):
        res = runner.invoke(main, ["synth", "--out", str(tmp_path / name), "--n", "40", "--seed", "5",
                                   "--hand-labels", "4", "--workers", "1"])
        assert res.exit_code == 0, res.output
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files_a) == 40
    for f in files_a[:10]:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / f)), np.asarray(Image.open(tmp_path / "b" / f)))
    assert (tmp_path / "a" / "labels.csv").read_text() == (tmp_path / "b" / "labels.csv").read_text()
    with open(tmp_path / "a" / "hand_labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(r["file"].startswith("Female/") for r in rows)
    # a different seed draws different faces
    res = runner.invoke(main, ["synth", "--out", str(tmp_path / "c"), "--n", "5", "--seed", "6", "--workers", "1"])
    assert res.exit_code == 0
    first = sorted((tmp_path / "c").rglob("000000.png"))[0]
    other = sorted((tmp_path / "a").rglob("000000.png"))[0]
    assert not np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(other)))


def test_synth_workers_do_not_change_the_set(tmp_path):
    runner = CliRunner()
    for name, w in (("one", "1"), ("two", "2")):
        assert runner.invoke(main, ["synth", "--out", str(tmp_path / name), "--n", "30", "--workers", w]).exit_code == 0
    assert (tmp_path / "one" / "labels.csv").read_text() == (tmp_path / "two" / "labels.csv").read_text()


def test_synth_colours_writes_small_palette_pngs_the_loaders_read(tmp_path):
    from training.data.images import load_rgb

    runner = CliRunner()
    for name, colours in (("full", "0"), ("pal", "16")):
        res = runner.invoke(main, ["synth", "--out", str(tmp_path / name), "--n", "24", "--colours", colours,
                                   "--workers", "1"])
        assert res.exit_code == 0, res.output
    full, pal = (sorted((tmp_path / n).rglob("*.png")) for n in ("full", "pal"))
    assert [p.relative_to(tmp_path / "pal") for p in pal] == [p.relative_to(tmp_path / "full") for p in full]
    assert sum(p.stat().st_size for p in pal) < 0.4 * sum(p.stat().st_size for p in full)
    for a, b in zip(full, pal, strict=True):
        assert Image.open(b).mode == "P"
        img = load_rgb(b)
        assert img.shape == (64, 64, 3) and np.abs(img.astype(int) - load_rgb(a)).mean() < 5.0
    assert (tmp_path / "full" / "labels.csv").read_text() == (tmp_path / "pal" / "labels.csv").read_text()
    res = runner.invoke(main, ["synth", "--out", str(tmp_path / "bad"), "--n", "2", "--colours", "1"])
    assert res.exit_code == 2 and "colours must be 0 (full colour) or in [2, 256], got 1" in res.output


def test_samples_and_inspect(tmp_path, synth_root):
    runner = CliRunner()
    out = tmp_path / "s.png"
    res = runner.invoke(main, ["samples", "--out", str(out), "--rows", "1", "--cols", "4", "--zoom", "1"])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (4 * 64, 6 * 64)
    res = runner.invoke(main, ["samples", "--out", str(tmp_path / "s.txt"), "--rows", "1", "--cols", "1"])
    assert res.exit_code == 2 and ".png" in res.output and not (tmp_path / "s.txt").exists()
    res = runner.invoke(main, ["inspect", str(synth_root)])
    assert res.exit_code == 0 and "folders dataset" in res.output
    res = runner.invoke(main, ["inspect", str(tmp_path)])
    assert res.exit_code != 0 and "unrecognised dataset layout" in res.output
