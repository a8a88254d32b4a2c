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


def test_wrong_regions_are_labelled_generated_where_the_box_is():
    from training.train_critic import wrong_regions

    gen = torch.Generator().manual_seed(0)
    real = torch.randint(60, 200, (6, 64, 64, 3), generator=gen, dtype=torch.uint8)
    fake = torch.full((6, 64, 64, 3), 30, dtype=torch.uint8)
    mixed, target = wrong_regions(real, fake, 8, (16, 16), gen)
    assert mixed.shape == real.shape and target.shape == (6, 8, 8)
    for i in range(6):
        changed = (mixed[i] != real[i]).any(-1).float()
        cells = 1.0 - torch.nn.functional.avg_pool2d(changed[None, None], 8)[0, 0]
        assert changed.sum() > 0
        # where the face was made wrong the target says generated (noise may leave a pixel as it was)
        assert torch.all(target[i] <= cells + 0.05) and 0.0 <= target[i].min() < 1.0 and target[i].max() == 1.0
    assert torch.all(mixed[0][mixed[0] != real[0]] == 30)  # the first third: a generated region pasted in


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


@pytest.mark.parametrize("retouch", ["projection", "simgan"])
def test_tiny_chain_trains_evaluates_and_exports(synth_root, two_stage, tmp_path, retouch):
    import onnxruntime as ort

    from training.stages.critic import train_and_export

    # a frozen attribute model in a run folder (random weights suffice to exercise the chain)
    att_cfg = ATTRIBUTE_TRAIN["tiny"]
    att_run = tmp_path / "attributes"
    RunFolder(att_run, att_cfg).close()
    torch.save(AttributeNet(att_cfg.model).state_dict(), att_run / "model.pt")
    exports = tmp_path / "exports"
    cfg = config_io.override(TRAIN_PRESETS["tiny"], {"retouch": retouch})
    report = train_and_export(synth_root, synth_root / "labels.csv", GENERATOR, att_run, None, cfg,
                              tmp_path / "run", exports / "critic" / "1", exports / "refiner" / "1", echo=lambda _: None,
                              autoencoder=two_stage / "runs" / "autoencoder", prior=two_stage / "runs" / "generator")
    assert report["critic_b_held_out"]["n_real"] > 0 and 0 <= report["retouch"]["fraction_changed"] <= 1
    assert Path(report["grid"]).stat().st_size > 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["retouch"] == report["retouch"]
    sig = json.loads((exports / "refiner" / "1" / "signature.json").read_text())
    assert sig["outputs"][0]["name"] == "retouched"
    if retouch == "projection":
        # calibrated on real faces critic A never saw: the largest flag_below within the budget
        cal = report["retouch"]["calibration"]
        assert sig["retouch"]["kind"] == "projection" and sig["retouch"]["flag_below"] == cal["flag_below"]
        within = [t for t in cal["tried"] if t["real_change"] <= cfg.real_change_max
                  and t["flagged_share"] >= cfg.flagged_share_min]
        assert within == [] and cal["flag_below"] == 0.0 or within[0]["flag_below"] == cal["flag_below"]
        # the latent denoiser was distilled from the tiny prior and rides inside the exported graph
        assert sig["retouch"]["latent_denoiser"] is True and report["timings"]["denoiser_s"] > 0
        assert (tmp_path / "run" / "denoiser" / "state.pt").exists()
    else:
        assert sig["retouch"]["flag_below"] == 0.5
    sess = ort.InferenceSession(str(exports / "critic" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    realness, realness_map = sess.run(None, {"images": np.zeros((2, 64, 64, 3), np.uint8)})
    assert realness.shape == (2,) and realness_map.shape == (2, 8, 8)


def test_the_projection_retouch_needs_the_prior_its_denoiser_is_distilled_from(synth_root, tmp_path):
    from training.stages import StageError
    from training.stages.critic import train_and_export

    with pytest.raises(StageError, match="--prior"):
        train_and_export(synth_root, synth_root / "labels.csv", GENERATOR, tmp_path / "att", None, TRAIN_PRESETS["tiny"],
                         tmp_path / "run", None, None, echo=lambda _: None, autoencoder=tmp_path / "ae")


def test_the_distilled_denoiser_moves_grids_towards_the_priors_projection(faces, two_stage, tmp_path):
    """Trained on grids and their prior projections, the denoiser brings held-out grids closer to
    their projections than the grids themselves are (it starts as the identity)."""
    import dataclasses

    from training.train_latent_denoiser import train_denoiser
    from training.two_stage import load_autoencoder, load_prior

    images = np.concatenate([faces["train"][1], faces["held_out"][1]])
    conditions = np.random.default_rng(0).random((len(images), len(CONDITIONS))).astype(np.float32)
    cfg = dataclasses.replace(TRAIN_PRESETS["tiny"].denoiser, steps=150, eval_every=150, val_fraction=0.25)
    reads = AttributeNet(ATTRIBUTE_PRESETS["tiny"]).eval()
    prior, ae = load_prior(two_stage / "runs" / "generator"), load_autoencoder(two_stage / "runs" / "autoencoder")
    model, figures = train_denoiser(prior, ae, reads, images, conditions, cfg, RunFolder(tmp_path / "denoiser", cfg))
    assert figures["val_mse"] < figures["val_mse_identity"]
    assert not model.training

    # the finished run again: no further training, and only the held-out faces are projected
    projected, project = [], prior.project
    prior.project = lambda g, c, passes=1: projected.append(len(g)) or project(g, c, passes)
    again, figures_again = train_denoiser(prior, ae, reads, images, conditions, cfg, RunFolder(tmp_path / "denoiser", cfg))
    assert sum(projected) == int(len(images) * cfg.val_fraction)
    assert figures_again == pytest.approx(figures)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))


def test_the_gate_calibration_keeps_the_change_where_the_map_flags(faces):
    """Asked for all of the change on generated faces inside the regions the critic flags, the
    calibration picks a gate that never reaches regions at or above the flag line (0.5); asked for
    none, the largest gate within the real-face budget, which reaches further."""
    from training.models.autoencoder import AUTOENCODER_PRESETS, Autoencoder
    from training.models.refiner import ProjectionConfig, ProjectionRetouch
    from training.train_critic import calibrate_projection

    torch.manual_seed(0)
    critic = Critic(CRITIC_PRESETS["tiny"]).folded()
    real, generated = faces["held_out"][0][:8], faces["held_out"][1][:8]
    with torch.no_grad():  # centre the untrained critic's logits: half of each map flagged, half not
        critic.net[-1].bias -= critic.patch_logits(torch.from_numpy(generated)).median()
    retoucher = ProjectionRetouch(critic, Autoencoder(AUTOENCODER_PRESETS["tiny"]).eval(), ProjectionConfig())
    loose, _ = calibrate_projection(retoucher, real, 255.0, generated, 0.0)
    strict, tried = calibrate_projection(retoucher, real, 255.0, generated, 1.0)
    assert loose.flag_below == 1.2  # the first candidate: nothing to hold it back
    assert strict.flag_below <= 0.5 < loose.flag_below
    assert all(t["flagged_share"] < 1.0 for t in tried[:-1]) and tried[-1]["flag_below"] == strict.flag_below


def test_pixel_change_counts_pixels_not_channels():
    a = np.zeros((1, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = (9, 9, 9)  # one pixel, all channels past the threshold
    b[0, 1, 1, 0] = 8  # at the threshold: not changed
    got = pixel_change(a, b)
    assert got["fraction_changed"] == pytest.approx(1 / 16)
    assert got["mean_abs_change"] == pytest.approx((27 + 8) / 48)


def _procedural_faces(synth_root, n: int = 24) -> np.ndarray:
    ds = open_dataset(synth_root)
    images, _, _ = load_images([r for r in ds.records if r.female][:n], Preprocess(64, 64))
    return images


def test_the_shipped_critic_flags_a_pasted_defect_where_it_is(synth_root):
    """Real faces with their eye band smeared or noised: the shipped critic's map drops inside the
    band, not elsewhere (it learned where things go wrong, not only "generated" as a whole)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(REPO / "exports" / "critic" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    faces = _procedural_faces(synth_root)
    band = (slice(20, 36), slice(12, 52))  # rows, columns of the eyes on an aligned 64 px face
    noised = faces.astype(np.float64)
    noised[:, band[0], band[1]] += np.random.default_rng(0).normal(0, 40, noised[:, band[0], band[1]].shape)
    noised = np.clip(noised, 0, 255)
    from training.train_critic import _blur

    smeared = faces.copy()
    smeared[:, band[0], band[1]] = np.round(_blur(torch.from_numpy(faces).float(), 3.0).numpy()[:, band[0], band[1]])
    _, before = sess.run(None, {"images": faces})
    cells = np.zeros((8, 8), bool)
    cells[20 // 8 : 36 // 8 + 1, 12 // 8 : 52 // 8] = True
    for defect in (noised, smeared):
        _, after = sess.run(None, {"images": defect.astype(np.uint8)})
        drop = (before - after).mean(axis=0)
        assert drop[cells].mean() > 0.1 and drop[cells].mean() > 3 * max(drop[~cells].mean(), 0.0), np.round(drop, 2)


def test_the_shipped_retouch_leaves_real_faces_nearly_alone_and_keeps_their_size(synth_root):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(REPO / "exports" / "refiner" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    faces = _procedural_faces(synth_root)
    out = sess.run(None, {"images": faces})[0]
    assert out.shape == faces.shape and out.dtype == np.uint8
    assert pixel_change(faces, out)["mean_abs_change"] < 1.5
