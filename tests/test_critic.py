"""Critic and refiner: the critic learns real vs generated, the refiner only touches flagged
regions, the condition-consistency term is live, and the whole tiny chain trains and exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from services.shared.conditions import CONDITIONS
from services.shared.labels import read_conditions_csv
from services.shared.layouts import open_dataset
from training import config as config_io
from training.data.loader import load_images
from training.data.preprocess import Preprocess
from training.eval_critic import auc, pixel_change, score
from training.generated import OnnxGenerator
from training.losses import refiner_losses
from training.models.attributes import ATTRIBUTE_PRESETS, AttributeNet
from training.models.critic import CRITIC_PRESETS, Critic
from training.models.refiner import REFINER_PRESETS, Refiner
from training.run_state import RunFolder
from training.train_attributes import TRAIN_PRESETS as ATTRIBUTE_TRAIN
from training.train_critic import TRAIN_PRESETS, train_critic

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "exports" / "generator" / "1"
TINY = config_io.override(TRAIN_PRESETS["tiny"], {"critic_steps": 150})


@pytest.fixture(scope="module")
def faces(synth_root, two_stage):
    """Real procedural faces and generated ones, each split in two halves (train / held out). The
    generated ones come from the tests' tiny two-stage export: the shipped generator's faces are
    now close enough to real that a 150-step tiny critic cannot tell them apart (AUC 0.59), which
    says nothing about whether the critic learns."""
    ds = open_dataset(synth_root)
    real, _, _ = load_images(ds.records, Preprocess(64, 64))
    truth = read_conditions_csv(synth_root / "labels.csv")
    pool = np.array([[truth[r.file][c] for c in CONDITIONS] for r in ds.records], np.float32)
    fake = OnnxGenerator(two_stage / "exports" / "generator" / "1").pool(pool, len(real), (0.6, 0.8, 1.0), seed=11)
    half = len(real) // 2
    return {"train": (real[:half], fake[:half]), "held_out": (real[half:], fake[half:])}


def test_tiny_critic_separates_real_from_generated(faces, tmp_path):
    critic = train_critic(*faces["train"], TINY, RunFolder(tmp_path / "critic", TINY), seed=0)
    real, fake = faces["held_out"]
    r, f = score(critic, real)[0], score(critic, fake)[0]
    assert auc(r, f) > 0.75, (auc(r, f), r.mean(), f.mean())
    realness, realness_map = critic(torch.from_numpy(real[:3]))
    assert realness.shape == (3,) and realness_map.shape == (3, critic.map_size, critic.map_size)
    # the score is the sigmoid of the mean region logit: map and score agree
    logits = critic.patch_logits(torch.from_numpy(real[:3]))
    torch.testing.assert_close(realness, torch.sigmoid(logits.mean(dim=(1, 2))))


def test_folding_spectral_norm_keeps_the_outputs(faces):
    critic = Critic(CRITIC_PRESETS["tiny"]).eval()
    x = torch.from_numpy(faces["train"][0][:4])
    torch.testing.assert_close(critic.folded()(x), critic(x))


def _busy_refiner() -> Refiner:
    refiner = Refiner(REFINER_PRESETS["tiny"])
    torch.nn.init.normal_(refiner.out.weight, std=0.5)  # untrained refiners are the identity
    return refiner.eval()


def test_regions_the_critic_calls_real_stay_untouched(faces):
    refiner = _busy_refiner()
    x = torch.from_numpy(faces["train"][1][:4]).float()
    r = refiner.cfg.flag_below
    with torch.no_grad():
        assert torch.equal(refiner(x, torch.full((4, 8, 8), r)), x)  # at the threshold: untouched
        flagged = torch.full((4, 8, 8), 1.0)
        flagged[:, :4] = 0.0  # the top half looks fake
        out = refiner(x, flagged)
    assert (out - x)[:, :24].abs().mean() > 1.0  # retouched where flagged …
    assert torch.equal(out[:, 40:], x[:, 40:])  # … and not where the map says real (past the bilinear blend)


def test_condition_consistency_term_is_live():
    torch.manual_seed(0)
    attributes = AttributeNet(ATTRIBUTE_PRESETS["tiny"]).eval().requires_grad_(False)
    critic = Critic(CRITIC_PRESETS["tiny"]).eval()
    x = torch.rand(4, 64, 64, 3) * 255
    refined = (x + 40 * torch.randn_like(x)).clamp(0, 255).requires_grad_(True)
    parts = refiner_losses(refined, x, critic, attributes, self_regularisation=0.0, condition=1.0)
    assert parts["condition"] > 0
    (grad,) = torch.autograd.grad(parts["condition"], refined)
    assert grad.abs().sum() > 0  # the drift's gradient reaches the refined image
    same = refiner_losses(x.clone(), x, critic, attributes, 0.0, 1.0)
    assert same["condition"] == 0
    heavy = refiner_losses(refined, x, critic, attributes, 0.0, 1e4)
    off = refiner_losses(refined, x, critic, attributes, 0.0, 0.0)
    assert torch.isclose(heavy["loss"] - off["loss"], 1e4 * parts["condition"], rtol=1e-3)


def test_tiny_chain_trains_evaluates_and_exports(synth_root, tmp_path):
    import onnxruntime as ort

    from training.cli_critic import train_and_export

    # a frozen attribute model in a run folder (random weights suffice to exercise the chain)
    att_cfg = ATTRIBUTE_TRAIN["tiny"]
    att_run = tmp_path / "attributes"
    RunFolder(att_run, att_cfg).close()
    torch.save(AttributeNet(att_cfg.model).state_dict(), att_run / "model.pt")
    exports = tmp_path / "exports"
    report = train_and_export(synth_root, synth_root / "labels.csv", GENERATOR, att_run, None, TRAIN_PRESETS["tiny"],
                              tmp_path / "run", exports / "critic" / "1", exports / "refiner" / "1", echo=lambda _: None)
    assert report["critic_b_held_out"]["n_real"] > 0 and 0 <= report["retouch"]["fraction_changed"] <= 1
    assert Path(report["grid"]).stat().st_size > 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["retouch"] == report["retouch"]
    sig = json.loads((exports / "refiner" / "1" / "signature.json").read_text())
    assert sig["outputs"][0]["name"] == "retouched" and sig["retouch"]["flag_below"] == 0.5
    sess = ort.InferenceSession(str(exports / "critic" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    realness, realness_map = sess.run(None, {"images": np.zeros((2, 64, 64, 3), np.uint8)})
    assert realness.shape == (2,) and realness_map.shape == (2, 8, 8)


def test_pixel_change_counts_pixels_not_channels():
    a = np.zeros((1, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = (9, 9, 9)  # one pixel, all channels past the threshold
    b[0, 1, 1, 0] = 8  # at the threshold: not changed
    got = pixel_change(a, b)
    assert got["fraction_changed"] == pytest.approx(1 / 16)
    assert got["mean_abs_change"] == pytest.approx((27 + 8) / 48)
