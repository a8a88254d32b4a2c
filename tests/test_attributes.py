"""Attribute model: training, the region-feature switch, labelling, export, and the shipped model's behaviour."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from services.shared.conditions import CONDITIONS
from services.shared.labels import read_conditions_csv
from services.shared.layouts import open_dataset
from training import config as config_io
from training.export import export_model
from training.models.attributes import AttributeConfig, AttributeNet
from training.run_state import RunFolder
from training.train_attributes import TRAIN_PRESETS, export_spec, load_labelled, mae, predict, split, train

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "exports" / "attributes" / "1"
TINY = config_io.override(TRAIN_PRESETS["tiny"], {"steps": 80, "val_fraction": 0.2})
HEAD = CONDITIONS.index("head")


@pytest.fixture(scope="module")
def labelled(synth_root):
    """Every labelled female of the small procedural set, with its ground truth as 'hand labels'."""
    truth = read_conditions_csv(synth_root / "labels.csv")
    files = sorted(f for f in truth if f.startswith("Female/"))
    data, problems = load_labelled(open_dataset(synth_root), truth, files, TINY)
    assert not problems
    return data


@pytest.fixture(scope="module")
def trained(labelled, tmp_path_factory):
    root = tmp_path_factory.mktemp("attributes")
    splits = split(labelled, TINY)
    model = train(splits, TINY, RunFolder(root / "run", TINY))
    export_model(model, export_spec(TINY), root / "exports" / "attributes" / "1", {})
    return model, splits, root


def test_training_lowers_mae(trained):
    model, splits, _ = trained
    untrained = AttributeNet(TINY.model)
    train_set = splits["train"]
    before = np.mean(list(mae(predict(untrained, train_set.images), train_set.targets).values()))
    after = np.mean(list(mae(predict(model, train_set.images), train_set.targets).values()))
    assert after < before - 0.03, (before, after)


def test_region_features_can_be_switched_off():
    cfg = AttributeConfig(stem=8, widths=(8, 16, 24), region_width=8, hidden=16, region_features=False)
    model = AttributeNet(cfg)
    assert not hasattr(model, "eye_branch")
    out = model(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    assert out.shape == (2, 5)
    with_regions = AttributeNet(AttributeConfig(stem=8, widths=(8, 16, 24), region_width=8, hidden=16))
    assert sum(p.numel() for p in with_regions.parameters()) > sum(p.numel() for p in model.parameters())


def test_flip_augmentation_mirrors_head():
    from training.train_attributes import flip_batch

    images = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).reshape(2, 4, 4, 3)
    targets = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.2]] * 2)
    gen = torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(20):
        out, t = flip_batch(images, targets, gen)
        for i in range(2):
            flipped = torch.equal(out[i], images[i].flip(1))
            assert t[i, HEAD].item() == pytest.approx(0.8 if flipped else 0.2)
            assert torch.equal(t[i, :HEAD], targets[i, :HEAD])
            seen.add(flipped)
    assert seen == {True, False}


def test_export_parity_and_signature(trained):
    from services.core.exports import load_session, run_images

    model, splits, root = trained
    export, session, _ = load_session(root / "exports" / "attributes" / "1")
    assert export.signature["conditions"] == list(CONDITIONS)
    assert export.signature["outputs"][0]["shape"] == ["batch", 5]
    images = splits["val"].images[:9]
    got = run_images(session, export, images, batch=4)["conditions"]
    np.testing.assert_allclose(got, predict(model, images), atol=1e-5)


def test_labelling_writes_one_row_per_selected_image(trained, synth_root, tmp_path):
    from click.testing import CliRunner

    from training.cli import main

    data = tmp_path / "ds"
    shutil.copytree(synth_root, data)
    runner = CliRunner()
    res = runner.invoke(main, ["select", "--data", str(data), "--threshold", "0.5"])
    assert res.exit_code == 0, res.output
    with open(data / "selection.csv", newline="") as fh:
        kept = [r["file"] for r in csv.DictReader(fh) if r["kept"] == "1"]
    assert kept
    res = runner.invoke(main, ["label", "--data", str(data), "--model", str(trained[2] / "exports" / "attributes" / "1")])
    assert res.exit_code == 0, res.output
    rows = read_conditions_csv(data / "conditions.csv")
    assert sorted(rows) == sorted(kept)
    hand = set(read_conditions_csv(data / "hand_labels.csv"))
    truth = read_conditions_csv(data / "labels.csv")
    # hand-labelled images get the model's prediction, not their hand label
    overlap = sorted(hand & set(rows))
    assert overlap and any(rows[f] != truth[f] for f in overlap)
    assert all(0.0 <= v <= 1.0 for r in rows.values() for v in r.values())


@pytest.fixture(scope="module")
def shipped():
    from services.core.exports import load_session

    return load_session(SHIPPED)


def test_shipped_outputs_stay_in_range_for_adversarial_inputs(shipped):
    from services.core.exports import run_images

    export, session, _ = shipped
    rng = np.random.default_rng(0)
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    adversarial = np.stack([
        np.zeros((64, 64, 3), np.uint8),
        np.full((64, 64, 3), 255, np.uint8),
        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        np.repeat(checker[..., None], 3, axis=2),
    ])
    out = run_images(session, export, adversarial)["conditions"]
    assert out.shape == (4, 5) and np.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()


def test_shipped_head_flips_under_a_mirror(shipped, synth_root):
    from services.core.exports import run_images

    export, session, _ = shipped
    ds = open_dataset(synth_root)
    from training.data.loader import load_images
    from training.data.preprocess import Preprocess

    images, _, _ = load_images(ds.records[:80], Preprocess())
    head = run_images(session, export, images)["conditions"][:, HEAD]
    mirrored = run_images(session, export, np.ascontiguousarray(images[:, :, ::-1]))["conditions"][:, HEAD]
    assert np.abs(head - (1.0 - mirrored)).mean() < 0.05
    assert np.corrcoef(head, mirrored)[0, 1] < -0.8
