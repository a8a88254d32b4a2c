from __future__ import annotations

import csv
import json
import shutil

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
    from services.shared.images import read as load_rgb

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


def test_hand_labels_sheet_for_a_celeba_set(tmp_path, synth_root):
    """CelebA has no hand labels: the sheet lists the first N female images by file name with the
    coarse conditions CelebA knows, and the attribute command points to it."""
    from tests.test_layouts import _celeba

    names = _celeba(tmp_path / "celeba", synth_root)  # female: the first only (the rest have Male=1)
    data = tmp_path / "celeba"
    runner = CliRunner()
    res = runner.invoke(main, ["attributes", "--data", str(data), "--preset", "tiny", "--out", str(tmp_path / "run")])
    assert res.exit_code == 1 and "facegen-train hand-labels" in res.output, res.output
    res = runner.invoke(main, ["hand-labels", "--data", str(data), "--n", "10"])
    assert res.exit_code == 0 and "to fill in: background, head" in res.output, res.output
    rows = list(csv.DictReader((data / "hand_labels_todo.csv").open()))
    assert [r["file"] for r in rows] == [f"img_align_celeba/{names[0]}"]
    assert rows[0]["mouth"] and rows[0]["eyes"] and rows[0]["background"] == rows[0]["head"] == ""
    # the unfilled sheet is refused, saying how much is labelled; a filled one trains
    res = runner.invoke(main, ["attributes", "--data", str(data), "--hand-labels", str(data / "hand_labels_todo.csv"),
                               "--preset", "tiny", "--out", str(tmp_path / "run")])
    assert res.exit_code == 1 and "0 of 1 images labelled" in res.output and "label-ui" in res.output, res.output
    (data / "hand_labels.csv").write_text("file,eyes,mouth,hair_color,background,head\nmine,0,0,0,0,0\n")
    res = runner.invoke(main, ["hand-labels", "--data", str(data), "--out", str(data / "hand_labels.csv")])
    assert res.exit_code == 1 and "exists" in res.output and "mine" in (data / "hand_labels.csv").read_text()


def test_filter_refuses_one_gender_and_says_when_it_could_not_calibrate(tmp_path, synth_root):
    one = tmp_path / "males"
    shutil.copytree(synth_root / "Male", one / "Male")
    (one / "Female").mkdir()
    runner = CliRunner()
    res = runner.invoke(main, ["filter", "--data", str(one), "--preset", "tiny", "--out", str(tmp_path / "r1")])
    assert res.exit_code == 1 and "0 female" in res.output and "both genders" in res.output, res.output
    # six faces: every one lands in train (the val and test splits are 10 % each), so nothing
    # can calibrate the filter; it trains, and says so instead of reporting NaN
    few = tmp_path / "few"
    for g in ("Female", "Male"):
        (few / g).mkdir(parents=True)
        for f in sorted((synth_root / g).glob("*.png"))[:3]:
            shutil.copy(f, few / g / f.name)
    res = runner.invoke(main, ["filter", "--data", str(few), "--preset", "tiny", "--set", "steps=2",
                               "--out", str(tmp_path / "r2")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert report["calibrated"] is False and report["temperature"] == 1.0 and "warning: not calibrated" in res.output
    assert "NaN" not in (tmp_path / "r2" / "metrics.json").read_text()


def _conditions_csv(path, files) -> None:
    path.write_text("file,eyes,mouth,hair_color,background,head\n" + "".join(f"{f},0.5,0.5,0.5,0.5,0.5\n" for f in files))


def test_generator_and_critic_say_what_a_tiny_set_lacks(tmp_path, synth_root):
    """Too few images for a held-out split: the generator trains and says it has no held-out
    score (was: ZeroDivisionError); the critic, whose three parts each need real faces, refuses
    before generating anything."""
    one = sorted(p.relative_to(synth_root).as_posix() for p in (synth_root / "Female").glob("*.png"))[:1]
    _conditions_csv(tmp_path / "one.csv", one)
    runner = CliRunner()
    res = runner.invoke(main, ["generator-pixel", "--data", str(synth_root), "--conditions", str(tmp_path / "one.csv"),
                               "--preset", "tiny", "--set", "steps=1", "--readjust-bn", "0",
                               "--attributes", str(tmp_path / "none"), "--out", str(tmp_path / "gen")])
    assert res.exit_code == 0, res.output
    assert "no held-out bits/dim" in res.output
    assert json.loads((tmp_path / "gen" / "metrics.json").read_text())["held_out"] is None
    _conditions_csv(tmp_path / "none.csv", [])
    res = runner.invoke(main, ["generator-pixel", "--data", str(synth_root), "--conditions", str(tmp_path / "none.csv"),
                               "--preset", "tiny", "--out", str(tmp_path / "gen0")])
    assert res.exit_code == 1 and "no images to train on" in res.output, res.output
    (tmp_path / "selection.csv").write_text("file,p_female,kept,reason\n")
    res = runner.invoke(main, ["label", "--data", str(synth_root), "--selection", str(tmp_path / "selection.csv"),
                               "--out", str(tmp_path / "conditions.csv")])
    assert res.exit_code == 1 and "keeps no image" in res.output and not (tmp_path / "conditions.csv").exists()
    res = runner.invoke(main, ["critic", "--data", str(synth_root), "--conditions", str(tmp_path / "one.csv"),
                               "--attributes-run", str(tmp_path), "--preset", "tiny", "--out", str(tmp_path / "critic")])
    assert res.exit_code == 1 and "1 readable training image(s) leave no real image for" in res.output, res.output


def test_attributes_on_a_handful_of_hand_labels(tmp_path, synth_root):
    one = sorted(p.relative_to(synth_root).as_posix() for p in (synth_root / "Female").glob("*.png"))[:1]
    _conditions_csv(tmp_path / "one.csv", one)
    _conditions_csv(tmp_path / "gone.csv", ["Female/not-there.png"])
    runner = CliRunner()
    res = runner.invoke(main, ["attributes", "--data", str(synth_root), "--hand-labels", str(tmp_path / "one.csv"),
                               "--preset", "tiny", "--set", "steps=1", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0 and "no validation error" in res.output, res.output
    report = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert report["val_mae"] is None and report["counts"] == {"train": 1, "val": 0}
    res = runner.invoke(main, ["attributes", "--data", str(synth_root), "--hand-labels", str(tmp_path / "gone.csv"),
                               "--preset", "tiny", "--out", str(tmp_path / "b")])
    assert res.exit_code == 1 and "no hand-labelled training images" in res.output and "1 listed" in res.output, res.output
