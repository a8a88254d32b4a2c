"""Filter model: training, resumability, calibration, selection, export contract."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from services.shared.layouts import open_dataset
from training import calibration
from training import config as config_io
from training.export import ExportParityError, check_parity, export_model
from training.run_state import RunFolder
from training.train_filter import TRAIN_PRESETS, calibrate_and_report, export_spec, load_splits, train

REPO = Path(__file__).resolve().parents[1]
TINY = config_io.override(TRAIN_PRESETS["tiny"], {"eval_every": 10})


@pytest.fixture(scope="module")
def splits(synth_root):
    return load_splits(open_dataset(synth_root), TINY)[0]


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    """A tiny filter, trained, calibrated and exported (ONNX) once for the module."""
    root = tmp_path_factory.mktemp("filter")
    run = RunFolder(root / "run", TINY)
    model = train(splits, TINY, run)
    report = calibrate_and_report(model, splits, run)
    run.close()
    export_model(model, export_spec(TINY), root / "exports" / "filter" / "1", {"metrics": report})
    return model, root


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_tiny_training_lowers_the_loss(trained):
    losses = _losses(trained[1] / "run")
    assert len(losses) == TINY.steps and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.05, (losses[:10], losses[-10:])


def test_train_step_skips_non_finite_updates():
    from training.models.filter import FilterNet
    from training.train_filter import train_step

    model = FilterNet(TINY.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.zeros(4, 64, 64, 3, dtype=torch.uint8)
    m = train_step(model, (images, torch.tensor([float("nan")] * 4)), opt)
    assert m["skipped"] == 1
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)


def test_interrupted_run_resumes_to_the_same_weights(splits, tmp_path):
    cfg = config_io.override(TINY, {"steps": 20, "eval_every": 5})
    straight = train(splits, cfg, RunFolder(tmp_path / "a", cfg))

    class Killed(Exception):
        pass

    def kill_at_12(step, _m):
        if step == 12:
            raise Killed

    with pytest.raises(Killed):
        train(splits, cfg, RunFolder(tmp_path / "b", cfg), progress=kill_at_12)
    resumed = train(splits, cfg, RunFolder(tmp_path / "b", cfg))  # the same command again
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k
    # a different config in the same folder is refused, not mixed
    with pytest.raises(config_io.ConfigError, match="different config"):
        RunFolder(tmp_path / "b", config_io.override(cfg, {"lr": 0.1}))
    with pytest.raises(config_io.ConfigError, match="different config"):
        RunFolder(tmp_path / "b", config_io.override(cfg, {"steps": 10}))  # fewer steps: not an extension
    # more steps train the same run further, from where it stopped
    longer = config_io.override(cfg, {"steps": 26})
    extended = train(splits, longer, RunFolder(tmp_path / "b", longer))
    assert config_io.load(type(cfg), tmp_path / "b" / "config.json") == longer
    assert not all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), extended.state_dict().values(),
                                                      strict=True))


def test_a_run_that_never_trained_takes_a_new_config(tmp_path):
    # the first start failed before any checkpoint (e.g. a wrong --data): nothing to mix with
    RunFolder(tmp_path / "r", TINY).close()
    changed = config_io.override(TINY, {"lr": 0.1})
    RunFolder(tmp_path / "r", changed).close()
    assert config_io.load(type(TINY), tmp_path / "r" / "config.json") == changed


def test_unknown_config_keys_are_errors():
    with pytest.raises(config_io.ConfigError, match="unknown"):
        config_io.override(TINY, {"stpes": 3})
    with pytest.raises(config_io.ConfigError, match="unknown key"):
        config_io.from_dict(type(TINY), {"model": {"widht": 3}})


def test_calibration_lowers_ece_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < calibration.sigmoid(z)).astype(np.float64)
    overconfident = 4.0 * z  # the true logit is z: σ(4z) claims far more certainty than it has
    t = calibration.fit_temperature(overconfident[:2000], y[:2000])
    assert 3.0 < t < 5.5
    before = calibration.metrics(overconfident[2000:], y[2000:])
    after = calibration.metrics(overconfident[2000:], y[2000:], t)
    assert after["ece"] < before["ece"] / 2 and after["nll"] < before["nll"]
    assert after["accuracy"] == before["accuracy"]  # a temperature never changes the decision
    assert calibration.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75


def test_calibration_report_and_diagram(trained):
    run = trained[1] / "run"
    report = json.loads((run / "metrics.json").read_text())
    assert report["temperature"] > 0 and set(report) >= {"test_before", "test_after"}
    from PIL import Image

    assert Image.open(run / "reliability.png").size == (480, 480)


def _copy_with_corrupt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "unlabeled" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (dst / "Female" / "readme.txt").write_text("not an image")
    return dst


def test_selection_rules(trained, synth_root, tmp_path):
    from services.shared.selection import write_selection
    from training.select import OnnxFilter, select

    data = _copy_with_corrupt(synth_root, tmp_path / "ds")
    model = OnnxFilter(trained[1] / "exports" / "filter" / "1")
    ds = open_dataset(data)
    for threshold in (0.3, 0.9):
        decisions = select(ds, model, threshold)
        files = [d.file for d in decisions]
        assert files == sorted(files) and len(files) == len(set(files)) == 162
        by_file = {d.file: d for d in decisions}
        assert by_file["unlabeled/broken.png"].reason.startswith("unreadable")
        assert by_file["Female/readme.txt"].reason.startswith("unreadable")
        for d in decisions:
            if d.file.startswith("Male/"):
                assert not d.kept and d.reason == "male_folder"
            elif d.p_female is not None:
                assert d.kept == (d.p_female >= threshold)
    # the same images give the same file
    write_selection(tmp_path / "a.csv", select(ds, model, 0.9))
    write_selection(tmp_path / "b.csv", select(open_dataset(data), model, 0.9))
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    with open(tmp_path / "a.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["file", "p_female", "kept", "reason"]


def test_export_contract_and_parity(trained, splits):
    from services.core.exports import load_session, run_images

    model, root = trained
    export, session, provider = load_session(root / "exports" / "filter" / "1")
    assert provider == "CPUExecutionProvider"
    sig = export.signature
    assert sig["inputs"][0] == {"name": "images", "dtype": "uint8", "shape": ["batch", 64, 64, 3], "range": [0, 255],
                                "description": "RGB face images, NHWC"}
    assert sig["outputs"][0]["name"] == "p_female" and export.image_size == (64, 64)
    assert export.card["parity"]["max_abs_diff"]["16"] <= 1e-5
    assert not list((root / "exports" / "filter" / "1").glob("*.data"))  # no external-data side files
    images = splits.images["test"][:37]
    got = run_images(session, export, images, batch=16)["p_female"]
    with torch.no_grad():
        want = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_parity_failure_is_refused(trained):
    model, root = trained
    spec = export_spec(TINY)
    broken = type(spec)(**{**spec.__dict__, "atol": 0.0})
    other = type(model)(TINY.model).eval()  # different weights than the exported graph
    with pytest.raises(ExportParityError):
        check_parity(other, root / "exports" / "filter" / "1" / "model.onnx", broken)


def test_tampered_model_is_refused(trained, tmp_path):
    from services.shared.exports import ExportError, read_export

    dst = tmp_path / "filter" / "1"
    shutil.copytree(trained[1] / "exports" / "filter" / "1", dst)
    data = bytearray((dst / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dst / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="sha256"):
        read_export(dst)
    (dst / "card.json").unlink()
    with pytest.raises(ExportError, match="missing card.json"):
        read_export(dst)


def test_shipped_filter_loads_without_torch():
    """exports/filter/1 runs in a process where importing torch is impossible."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from services.core.exports import load_session, run_images\n"
        "e, s, p = load_session('exports/filter/1')\n"
        "out = run_images(s, e, np.zeros((3, 64, 64, 3), np.uint8))['p_female']\n"
        "assert out.shape == (3,) and ((0 <= out) & (out <= 1)).all()\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(p, e.card['onnx_bytes'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "CPUExecutionProvider" in res.stdout
    assert (REPO / "exports" / "filter" / "1" / "model.onnx").stat().st_size <= 5 * 2**20
