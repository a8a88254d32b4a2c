"""The two-stage generator: autoencoder (stage 1), conditional NVAE over its latent grid (stage 2),
the exported sampler (same contract as the services expect) and the exported encoder."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from training.cli import main
from training.generated import OnnxGenerator, torch_draw
from training.models.autoencoder import AUTOENCODER_PRESETS, Autoencoder
from training.models.generator import to_uint8
from training.models.latent_prior import LATENT_PRIOR_PRESETS, LatentPrior, Refinement, TwoStageSampler
from training.two_stage import load_autoencoder, load_prior, refinement


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_autoencoder_trains_with_its_adversarial_term_and_saves_a_normalised_grid(two_stage):
    run = two_stage / "runs" / "autoencoder"
    log = _log(run)
    assert len(log) == 30 and all(np.isfinite(r["loss"]) for r in log)
    assert np.mean([r["l1"] for r in log[-5:]]) < np.mean([r["l1"] for r in log[:5]])
    # the feature term from step 5, the discriminator from 10, the decoder's adversarial term from 15
    assert [r["step"] for r in log if r["perceptual"] > 0][0] == 5
    assert [r["step"] for r in log if "d_loss" in r][0] == 10
    assert [r["step"] for r in log if "adv_weight" in r][0] == 15
    assert all(np.isfinite(r["d_loss"]) for r in log if "d_loss" in r)
    model = load_autoencoder(run)
    assert model.latent_scale.min() > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["held_out"] is None or metrics["held_out"]["l1_per_255"] > 0


def test_the_grid_is_normalised_and_decodes_back_to_images():
    ae = Autoencoder(AUTOENCODER_PRESETS["tiny"]).eval()
    x = torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8)
    raw = ae.encode_raw(x)
    assert raw.shape == (6, 4, 16, 16)
    ae.set_scale(raw)
    z = ae.encode(x)
    assert z.mean(dim=(0, 2, 3)).abs().max() < 1e-4 and (z.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    assert torch.allclose(ae.decode(z), ae.decode_raw(raw), atol=1e-5)


def test_encoder_noise_redraws_the_posterior_mean_through_the_sampler():
    """What the encoder export hands out, fed to the sampler at temperature 1 with the same
    conditions, gives exactly the grid the posterior means decode to."""
    torch.manual_seed(0)
    prior = LatentPrior(LATENT_PRIOR_PRESETS["tiny"]).eval()
    grid, cond = torch.randn(3, 4, 16, 16), torch.rand(3, 5)
    noise = prior.posterior_noise(grid, cond)
    assert [tuple(n.shape[1:]) for n in noise] == prior.group_shapes
    h, _ = prior.hier.top_down(cond, prior.encode(grid, cond), None, posterior_mean=True)
    want = prior.head(h).chunk(2, dim=1)[0]
    assert torch.allclose(prior.sample(cond, noise, 1.0), want, atol=1e-5)


def test_the_sampler_refines_each_drawn_grid_by_round_trips_and_prior_projections():
    """passes = 0 decodes the drawn grid as it is; each pass decodes, encodes again and projects
    by the prior's posterior mean; the noise still decides the face."""
    torch.manual_seed(0)
    prior = LatentPrior(LATENT_PRIOR_PRESETS["tiny"]).eval()
    ae = Autoencoder(AUTOENCODER_PRESETS["tiny"]).eval()
    ae.set_scale(ae.encode_raw(torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8)))
    cond = torch.rand(3, 5)
    noise = [torch.randn(3, *s) for s in prior.group_shapes]
    other = [torch.randn(3, *s) for s in prior.group_shapes]
    drawn = prior.sample(cond, noise, 1.0)
    with torch.no_grad():
        as_drawn = TwoStageSampler(prior, ae, Refinement(passes=0)).sample(cond, noise, 1.0)
        refined = TwoStageSampler(prior, ae, Refinement(passes=2))
        got = refined.sample(cond, noise, 1.0)
        grid = drawn
        for _ in range(2):
            grid = prior.project(ae.encode((ae.decode(grid).permute(0, 2, 3, 1) + 1) * 127.5), cond)
        assert torch.equal(as_drawn, to_uint8(ae.decode(drawn)))
        assert torch.equal(got, to_uint8(ae.decode(grid)))
        assert not torch.equal(got, as_drawn)
        assert torch.equal(got, refined.sample(cond, noise, 1.0))
        assert not torch.equal(got, refined.sample(cond, other, 1.0))
        without_round_trip = TwoStageSampler(prior, ae, Refinement(passes=1, round_trip=False)).sample(cond, noise, 1.0)
        assert torch.equal(without_round_trip, to_uint8(ae.decode(prior.project(drawn, cond))))


def test_the_sampler_export_keeps_the_services_contract(two_stage):
    export = two_stage / "exports" / "generator" / "1"
    sig = json.loads((export / "signature.json").read_text())
    assert [i["name"] for i in sig["inputs"]][:2] == ["conditions", "temperature"]
    assert len(sig["latent_groups"]) == len(sig["inputs"]) - 2
    assert sig["outputs"][0]["dtype"] == "uint8" and "autoencoder" in sig["sampling"]
    # the card says how the sampler refines its grids (the stage's config: the default here)
    assert json.loads((export / "card.json").read_text())["refinement"] == {"passes": 4, "round_trip": True}
    gen = OnnxGenerator(export)
    cond = np.random.default_rng(0).random((4, 5), dtype=np.float32)
    a = gen(cond, 0.8, np.arange(7, 11))
    b = gen(cond, 0.8, np.arange(7, 11))
    c = gen(cond, 0.8, np.arange(20, 24))
    assert a.shape == (4, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)  # same seed → same faces
    assert not np.array_equal(a, c)
    # the run's prior and autoencoder in PyTorch (what the probes draw from) draw the exported faces
    run = two_stage / "runs" / "generator"
    sampler = TwoStageSampler(load_prior(run), load_autoencoder(two_stage / "runs" / "autoencoder"), refinement(run))
    assert np.abs(torch_draw(sampler.eval())(cond, 0.8, np.arange(7, 11)).astype(int) - a).max() <= 1


def test_the_encoder_export_gives_the_sampler_its_noise(two_stage):
    enc_dir, gen_dir = two_stage / "exports" / "encoder" / "1", two_stage / "exports" / "generator" / "1"
    sig = json.loads((enc_dir / "signature.json").read_text())
    gen_sig = json.loads((gen_dir / "signature.json").read_text())
    assert sig["latent_groups"] == gen_sig["latent_groups"]
    sess = ort.InferenceSession(str(enc_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    cond = np.full((2, 5), 0.5, np.float32)
    noise = sess.run(None, {"images": images, "conditions": cond})
    assert [list(n.shape[1:]) for n in noise] == gen_sig["latent_groups"]
    gen = ort.InferenceSession(str(gen_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"conditions": cond, "temperature": np.array(1.0, np.float32)}
    feeds.update({f"noise_{g}": n for g, n in enumerate(noise)})
    assert gen.run(None, feeds)[0].shape == (2, 64, 64, 3)


def test_the_redraw_export_is_the_sampler_without_its_refinement(two_stage):
    """Edits redraw through the sampler's contract without the refinement: the run's PyTorch
    sampler with no passes draws its faces (±1 level), and they differ from the refined sampler's."""
    redraw_dir, gen_dir = two_stage / "exports" / "redraw" / "1", two_stage / "exports" / "generator" / "1"
    sig, gen_sig = (json.loads((d / "signature.json").read_text()) for d in (redraw_dir, gen_dir))
    assert sig["model"] == "redraw" and sig["inputs"] == gen_sig["inputs"] and sig["outputs"] == gen_sig["outputs"]
    assert json.loads((redraw_dir / "card.json").read_text())["refinement"]["passes"] == 0
    cond = np.random.default_rng(2).random((3, 5), dtype=np.float32)
    faces = OnnxGenerator(redraw_dir)(cond, 1.0, np.arange(3))
    run = two_stage / "runs" / "generator"
    unrefined = TwoStageSampler(load_prior(run), load_autoencoder(two_stage / "runs" / "autoencoder"), Refinement(passes=0))
    assert np.abs(torch_draw(unrefined.eval())(cond, 1.0, np.arange(3)).astype(int) - faces).max() <= 1
    assert np.abs(OnnxGenerator(gen_dir)(cond, 1.0, np.arange(3)).astype(int) - faces).max() > 1


def test_stage_two_says_what_is_missing(two_stage, synth_root, tmp_path):
    cond = str(two_stage / "conditions.csv")
    res = CliRunner().invoke(main, ["generator", "--data", str(synth_root), "--conditions", cond, "--preset", "tiny",
                                    "--autoencoder", str(tmp_path / "none"), "--out", str(tmp_path / "g")])
    assert res.exit_code == 1 and "train stage 1 first" in res.output, res.output
    res = CliRunner().invoke(main, ["generator", "--data", str(synth_root), "--conditions", cond, "--preset", "tiny",
                                    "--autoencoder", str(two_stage / "runs" / "autoencoder"),
                                    "--set", "model.data_channels=8", "--out", str(tmp_path / "g2")])
    assert res.exit_code == 1 and "16×16×8 grid" in res.output and "makes 16×16×4" in res.output, res.output


@pytest.mark.parametrize(("command", "bad", "message"), [
    ("autoencoder", "model.latent_size=7", "latent_size must be image_size / 2**"),
    ("generator", "model.grid_size=8", "must be the grid size"),
])
def test_inconsistent_shapes_are_refused_before_training(command, bad, message, synth_root, tmp_path):
    res = CliRunner().invoke(main, [command, "--data", str(synth_root), "--preset", "tiny", "--set", bad,
                                    "--out", str(tmp_path / "a")])
    assert res.exit_code == 1 and message in res.output, res.output
    assert not (tmp_path / "a" / "config.json").exists()


def test_decoder_adaptation_keeps_the_encoder_and_sharpens_only_the_decoder(two_stage, synth_root, tmp_path):
    """Stage 3 fine-tunes the decoder against the prior's samples: the encoder and its latent
    normalisation are the stage-1 ones to the bit (the prior's data did not move), the decoder
    changed, the discriminator saw reconstructions and prior samples, and the export runs."""
    ae_run = two_stage / "runs" / "autoencoder"
    out, export = tmp_path / "decoder", tmp_path / "exports" / "generator" / "1"
    res = CliRunner().invoke(main, ["decoder", "--data", str(synth_root), "--conditions", str(two_stage / "conditions.csv"),
                                    "--autoencoder", str(ae_run), "--prior", str(two_stage / "runs" / "generator"),
                                    "--preset", "tiny", "--out", str(out), "--export", str(export)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    log = _log(out)
    assert len(log) == 20 and all(np.isfinite(r["loss"]) for r in log)
    assert [r["step"] for r in log if "adv_weight" in r][0] == 5
    before, after = load_autoencoder(ae_run).state_dict(), load_autoencoder(out).state_dict()
    enc = [k for k in before if k.startswith(("encoder.", "latent_"))]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    faces = OnnxGenerator(export)(np.full((2, 5), 0.5, np.float32), 0.8, np.arange(2))
    assert faces.shape == (2, 64, 64, 3) and (tmp_path / "exports" / "encoder" / "1" / "model.onnx").exists()
    # steps=0 exports a committed decoder as it is, and its card still says how that decoder was trained
    again = tmp_path / "again"
    res = CliRunner().invoke(main, ["decoder", "--data", str(synth_root), "--conditions", str(two_stage / "conditions.csv"),
                                    "--autoencoder", str(out), "--prior", str(two_stage / "runs" / "generator"),
                                    "--preset", "tiny", "--set", "steps=0", "--out", str(tmp_path / "no_training"),
                                    "--export", str(again)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    card = json.loads((again / "card.json").read_text())
    assert card["decoder_config"] == json.loads((out / "config.json").read_text())
    assert card["decoder_config"]["steps"] == 20
    assert np.array_equal(OnnxGenerator(again)(np.full((2, 5), 0.5, np.float32), 0.8, np.arange(2)), faces)


def test_decoder_adaptation_needs_a_trained_prior(two_stage, synth_root, tmp_path):
    res = CliRunner().invoke(main, ["decoder", "--data", str(synth_root), "--autoencoder",
                                    str(two_stage / "runs" / "autoencoder"), "--prior", str(tmp_path / "none"),
                                    "--preset", "tiny", "--out", str(tmp_path / "d")])
    assert res.exit_code == 1 and "train stage 2 first" in res.output, res.output


def test_the_anchor_holds_the_prior_to_its_start_except_the_feature_band():
    """Latent prior consistency with an anchor: a copy of the prior gives zero anchor loss; a grid
    changed only in structure inside the eye-and-mouth band costs nothing, the same change outside
    it does, and so does a colour shift inside it. Restricting the read conditions changes the drift."""
    from training import config as config_io
    from training.models.attributes import ATTRIBUTE_PRESETS, AttributeNet
    from training.train_latent_prior import TRAIN_PRESETS, Consistency, anchor_loss, band_mask, negative_elbo

    band = band_mask(16)
    assert band.any() and not band.all() and band[8, 8] and not band[0, 0]
    g = torch.randn(2, 4, 16, 16)
    inside = torch.zeros(16, 16)
    inside[band] = torch.randn(int(band.sum()))
    inside[band] -= inside[band].mean()  # structure only: the band's mean is unchanged
    assert anchor_loss(g + inside, g) < 1e-10
    assert anchor_loss(g + inside.roll(8, 0) * (~band), g) > 0.01
    shifted = g.clone()
    shifted[..., band] += 0.5
    assert anchor_loss(shifted, g) == pytest.approx(0.25, rel=1e-4)

    torch.manual_seed(0)
    prior = LatentPrior(LATENT_PRIOR_PRESETS["tiny"])
    ae = Autoencoder(AUTOENCODER_PRESETS["tiny"]).eval()
    attributes = AttributeNet(ATTRIBUTE_PRESETS["tiny"]).eval()
    anchor = LatentPrior(LATENT_PRIOR_PRESETS["tiny"])
    anchor.load_state_dict(prior.state_dict())
    anchor.eval(), prior.eval()  # same BatchNorm mode: the anchor's sample is the prior's
    grid, cond = torch.randn(8, 4, 16, 16), torch.rand(8, 5)
    cfg = config_io.override(TRAIN_PRESETS["tiny"], {"condition_weight": 1.0, "condition_batch": 4, "anchor_weight": 10.0})
    torch.manual_seed(1)
    out = negative_elbo(prior, grid, cond, 10, cfg, None, Consistency(ae, attributes, anchor))
    assert out["drift"] > 0 and float(out["anchor"]) < 1e-8
    eyes = config_io.override(cfg, {"condition_names": ["eyes", "mouth"]})
    torch.manual_seed(1)
    assert negative_elbo(prior, grid, cond, 10, eyes, None, Consistency(ae, attributes, anchor))["drift"] != out["drift"]


def test_decoder_adaptation_exports_a_chosen_snapshot(two_stage, synth_root, tmp_path):
    """--snapshot N uses the EMA weights saved at step N, not the last ones (and exports them)."""
    out = tmp_path / "decoder"
    args = ["decoder", "--data", str(synth_root), "--conditions", str(two_stage / "conditions.csv"),
            "--autoencoder", str(two_stage / "runs" / "autoencoder"), "--prior", str(two_stage / "runs" / "generator"),
            "--preset", "tiny", "--set", "snapshot_every=10", "--out", str(out)]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    last = load_autoencoder(out).state_dict()
    trial = tmp_path / "trial"  # an export outside exports/generator/<version>: its encoder goes beside it
    res = CliRunner().invoke(main, [*args, "--snapshot", "10", "--export", str(trial)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "trial_encoder" / "model.onnx").exists() and not (tmp_path.parent / "encoder").exists()
    assert (tmp_path / "trial_redraw" / "model.onnx").exists() and not (tmp_path.parent / "redraw").exists()
    chosen, snap = load_autoencoder(out).state_dict(), torch.load(out / "snapshots" / "step000010.pt")
    assert all(torch.equal(chosen[k], snap[k]) for k in snap)
    assert any(not torch.equal(chosen[k], last[k]) for k in snap if k.startswith("decoder."))
    res = CliRunner().invoke(main, [*args, "--snapshot", "7"])
    assert res.exit_code == 1 and "step000007.pt not found" in res.output


def test_stage_three_condition_term_reads_the_decoded_prior_samples():
    """With condition_weight > 0 stage 3's loss holds weight × the attribute model's error on the
    decoded prior samples (over the named conditions only), and its gradient reaches the decoder."""
    import copy

    from training import config as config_io
    from training.models.attributes import ATTRIBUTE_PRESETS, AttributeNet
    from training.models.autoencoder import PatchDiscriminator
    from training.train_autoencoder import ADAPT_PRESETS, train_step

    torch.manual_seed(0)
    attributes = AttributeNet(ATTRIBUTE_PRESETS["tiny"]).eval().requires_grad_(False)
    base = config_io.override(ADAPT_PRESETS["tiny"], {"adversarial_start": 100, "disc_start": 100, "bf16": False})
    on = config_io.override(base, {"condition_weight": 3.0, "condition_names": ["eyes", "mouth"]})
    ae = Autoencoder(AUTOENCODER_PRESETS["tiny"])
    x = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    cfg_m = ae.cfg
    grids, wanted = torch.randn(4, cfg_m.latent_channels, cfg_m.latent_size, cfg_m.latent_size), torch.rand(4, 5)
    losses, drifts, decoders = [], [], []
    for cfg in (base, on):
        model = copy.deepcopy(ae)
        disc = PatchDiscriminator(cfg.disc_widths)
        opt = torch.optim.SGD(model.decoder.parameters(), lr=1.0)
        opt_d = torch.optim.SGD(disc.parameters(), lr=0.0)
        model.encoder.requires_grad_(False)
        torch.manual_seed(1)
        m = train_step(model, disc, opt, opt_d, x, 0, cfg, None, grids, wanted, attributes)
        losses.append(m["loss"]), drifts.append(m["drift"]), decoders.append(model.decoder.state_dict())
    assert drifts[0] == 0 and drifts[1] > 0
    assert losses[1] - losses[0] == pytest.approx(3.0 * drifts[1], rel=1e-3)
    assert any(not torch.equal(decoders[0][k], decoders[1][k]) for k in decoders[0])  # the term moved the decoder
    all_five = config_io.override(on, {"condition_names": []})
    model, disc = copy.deepcopy(ae), PatchDiscriminator(on.disc_widths)
    frozen = torch.optim.SGD(model.decoder.parameters(), lr=0.0)
    torch.manual_seed(1)
    m = train_step(model, disc, frozen, frozen, x, 0, all_five, None, grids, wanted, attributes)
    assert m["drift"] != pytest.approx(drifts[1])


def test_stage_three_condition_term_needs_the_attribute_model(two_stage, synth_root, tmp_path):
    res = CliRunner().invoke(main, ["decoder", "--data", str(synth_root), "--conditions", str(two_stage / "conditions.csv"),
                                    "--autoencoder", str(two_stage / "runs" / "autoencoder"),
                                    "--prior", str(two_stage / "runs" / "generator"), "--preset", "tiny",
                                    "--set", "condition_weight=1", "--attributes-run", str(tmp_path / "none"),
                                    "--out", str(tmp_path / "d")])
    assert res.exit_code == 1 and "needs the trained attribute model" in res.output, res.output


def test_compact_checkpoints_are_read_as_their_runs(two_stage, tmp_path):
    """`facegen-train checkpoint`: a stage-2 run becomes its EMA in fp16 that load_prior reads back
    (the same prior up to fp16 rounding), a stage-1 run its model.pt as it is; other folders are
    refused with what is missing."""
    from training.train_generator import ema_weights
    from training.two_stage import load_prior

    runs = two_stage / "runs"
    res = CliRunner().invoke(main, ["checkpoint", str(runs / "generator"), str(tmp_path / "prior")])
    assert res.exit_code == 0 and "ema_fp16.pt" in res.output, res.output
    full, compact = ema_weights(runs / "generator"), ema_weights(tmp_path / "prior")
    assert full.keys() == compact.keys()
    assert all(torch.allclose(full[k].float(), compact[k], rtol=1e-3, atol=1e-4) for k in full)
    assert load_prior(tmp_path / "prior").cfg == load_prior(runs / "generator").cfg
    res = CliRunner().invoke(main, ["checkpoint", str(runs / "autoencoder"), str(tmp_path / "ae")])
    assert res.exit_code == 0, res.output
    before, after = load_autoencoder(runs / "autoencoder").state_dict(), load_autoencoder(tmp_path / "ae").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    res = CliRunner().invoke(main, ["checkpoint", str(tmp_path), str(tmp_path / "none")])
    assert res.exit_code == 1 and "config.json not found" in res.output


def test_the_realness_term_asks_the_critic_to_call_the_prior_samples_real(tmp_path):
    """With realness_weight > 0 the prior's loss holds weight × softplus(−logit) of a frozen critic
    on its decoded samples (without the condition term), its gradient reaches the prior, and a
    critic that calls the faces real costs less than one that calls them generated. A critic run's
    folder loads back as the critic it saved."""
    from training import config as config_io
    from training.losses import unrealness
    from training.models.attributes import ATTRIBUTE_PRESETS, AttributeNet
    from training.models.critic import CRITIC_PRESETS, Critic
    from training.train_critic import CriticTrainConfig, load_critic
    from training.train_latent_prior import TRAIN_PRESETS, Consistency, negative_elbo

    torch.manual_seed(0)
    prior = LatentPrior(LATENT_PRIOR_PRESETS["tiny"])
    ae = Autoencoder(AUTOENCODER_PRESETS["tiny"]).eval().requires_grad_(False)
    attributes = AttributeNet(ATTRIBUTE_PRESETS["tiny"]).eval()
    critic = Critic(CRITIC_PRESETS["tiny"]).folded().requires_grad_(False)
    grid, cond = torch.randn(8, 4, 16, 16), torch.rand(8, 5)
    off = config_io.override(TRAIN_PRESETS["tiny"], {"condition_batch": 4, "realness_weight": 1e-9})
    on = config_io.override(off, {"realness_weight": 2.0})
    outs = []
    for cfg in (off, on):
        prior.zero_grad()
        torch.manual_seed(1)
        out = negative_elbo(prior, grid, cond, 10, cfg, None, Consistency(ae, attributes, None, critic))
        out["loss"].backward()
        outs.append((out, [p.grad.clone() for p in prior.parameters() if p.grad is not None]))
    (lo, g_off), (hi, g_on) = outs
    assert float(hi["drift"]) == 0 and float(hi["realness"]) > 0
    assert float(hi["loss"].detach() - lo["loss"].detach()) == pytest.approx(2.0 * float(hi["realness"]), rel=1e-3)
    assert any(not torch.allclose(a, b) for a, b in zip(g_off, g_on, strict=True))  # the term reaches the prior

    images = torch.rand(4, 3, 64, 64) * 2 - 1
    last = critic.net[-1]
    last.bias.fill_(5.0)
    called_real = float(unrealness(critic, images))
    last.bias.fill_(-5.0)
    assert called_real < 0.01 < float(unrealness(critic, images))

    folder = tmp_path / "critic_a"
    folder.mkdir()
    trained = Critic(CRITIC_PRESETS["tiny"])
    cfg = config_io.override(CriticTrainConfig(), {"critic": config_io.to_dict(CRITIC_PRESETS["tiny"])})
    (folder / "config.json").write_text(json.dumps(config_io.to_dict(cfg)))
    torch.save({"model": trained.state_dict()}, folder / "state.pt")
    faces = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    assert torch.allclose(load_critic(folder)(faces)[0], trained.folded()(faces)[0], atol=1e-5)


def test_the_realness_term_needs_a_critic(two_stage, synth_root, tmp_path):
    res = CliRunner().invoke(main, ["generator", "--data", str(synth_root), "--conditions", str(two_stage / "conditions.csv"),
                                    "--autoencoder", str(two_stage / "runs" / "autoencoder"), "--preset", "tiny",
                                    "--set", "realness_weight=1", "--set", f"realness_from={tmp_path / 'none'}",
                                    "--out", str(tmp_path / "g")])
    assert res.exit_code == 1 and "needs a critic" in res.output and "critic_a" in res.output, res.output
    assert not (tmp_path / "g" / "state.pt").exists()


def test_the_online_critic_keeps_learning_and_resumes_with_the_run(tmp_path):
    """realness_critic_lr > 0: after each update of the prior the critic takes one step on real
    faces vs that step's decoded samples (its weights move; a frozen critic's do not), its loss is
    logged, its weights and optimiser are saved with the run, and a run that is extended resumes
    them. Without real faces it refuses to start."""
    from training import config as config_io
    from training.models.critic import CRITIC_PRESETS, Critic
    from training.run_state import RunFolder
    from training.train_latent_prior import TRAIN_PRESETS, Consistency, train

    torch.manual_seed(0)
    ae = Autoencoder(AUTOENCODER_PRESETS["tiny"]).eval()
    grids = (torch.randn(16, 4, 16, 16), torch.randn(16, 4, 16, 16))
    cond = np.random.default_rng(0).random((16, 5)).astype(np.float32)
    real = torch.randint(0, 256, (16, 64, 64, 3), dtype=torch.uint8)
    base = config_io.override(TRAIN_PRESETS["tiny"], {"steps": 4, "eval_every": 2, "condition_batch": 4,
                                                      "realness_weight": 1.0})
    start = Critic(CRITIC_PRESETS["tiny"]).folded()

    def fit(cfg, folder, critic):
        judge = Consistency(ae, None, None, critic, real)
        train(grids, cond, cfg, RunFolder(tmp_path / folder, cfg), judge=judge)
        return critic

    frozen = fit(base, "frozen", copy.deepcopy(start))
    assert all(torch.equal(a, b) for a, b in zip(frozen.state_dict().values(), start.state_dict().values(), strict=True))
    online_cfg = config_io.override(base, {"realness_critic_lr": 1e-2})
    online = fit(online_cfg, "online", copy.deepcopy(start))
    assert any(not torch.equal(a, b) for a, b in zip(online.state_dict().values(), start.state_dict().values(), strict=True))
    assert [r["step"] for r in _log(tmp_path / "online") if "critic_loss" in r] == [0]
    saved = torch.load(tmp_path / "online" / "state.pt", weights_only=False)["online_critic"]
    assert all(torch.equal(saved["critic"][k], v) for k, v in online.state_dict().items())
    # trained on to 6 steps with another critic passed in: the run resumes the saved one (two
    # small steps from it), not the one it was handed
    torch.manual_seed(5)
    other = Critic(CRITIC_PRESETS["tiny"]).folded()
    resumed = fit(config_io.override(online_cfg, {"steps": 6}), "online", copy.deepcopy(other))

    def distance(a, b):
        return sum(float((x - y).abs().sum()) for x, y in zip(a.values(), b.values(), strict=True))
    assert distance(resumed.state_dict(), saved["critic"]) < 0.1 * distance(resumed.state_dict(), other.state_dict())
    with pytest.raises(ValueError, match="real training faces"):
        train(grids, cond, online_cfg, RunFolder(tmp_path / "none", online_cfg),
              judge=Consistency(ae, None, None, copy.deepcopy(start), None))
