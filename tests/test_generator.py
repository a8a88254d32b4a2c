"""Generator (conditional NVAE): losses, schedules, tiny training, conditioning, ONNX sampler."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from services.shared.conditions import CONDITIONS
from services.shared.labels import read_conditions_csv
from services.shared.layouts import open_dataset
from training import config as config_io
from training import losses
from training.data.loader import load_images
from training.data.preprocess import Preprocess
from training.export import export_model
from training.models.generator import GENERATOR_PRESETS, AttributeGenerator, Sampler
from training.run_state import RunFolder
from training.train_generator import TRAIN_PRESETS, export_spec, train

TINY = config_io.override(TRAIN_PRESETS["tiny"], {"steps": 40})


@pytest.fixture(scope="module")
def data(synth_root):
    truth = read_conditions_csv(synth_root / "labels.csv")
    ds = open_dataset(synth_root)
    images, records, _ = load_images(ds.records, Preprocess())
    conds = np.array([[truth[r.file][c] for c in CONDITIONS] for r in records], np.float32)
    return images, conds


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("generator")
    model, ema = train(*data, TINY, RunFolder(root / "run", TINY))
    return model, ema, root


def test_tiny_training_lowers_the_loss_and_stays_finite(trained):
    losses_ = [json.loads(line)["loss"] for line in (trained[2] / "run" / "log.jsonl").read_text().splitlines()
               if '"loss"' in line]
    assert len(losses_) == TINY.steps and np.isfinite(losses_).all()
    assert np.mean(losses_[-8:]) < np.mean(losses_[:8]) - 0.2, (losses_[:8], losses_[-8:])


def test_kl_warmup_and_balancing_follow_their_schedule():
    assert losses.kl_warmup(0, 100) == pytest.approx(1e-4)
    assert losses.kl_warmup(50, 100) == pytest.approx(0.5)
    assert losses.kl_warmup(100, 100) == losses.kl_warmup(500, 100) == 1.0
    kls = torch.tensor([[10.0, 1.0, 100.0]] * 4)
    alpha = torch.tensor([1.0, 1.0, 4.0])
    weighted, coeffs = losses.kl_balance(kls, 0.5, alpha)
    assert coeffs.mean().item() == pytest.approx(1.0)
    assert coeffs[0] > coeffs[1]  # larger KL → more weight during warm-up …
    assert coeffs[2] / coeffs[0] == pytest.approx((100.01 / 4) / 10.01, rel=1e-4)  # … divided by alpha
    assert weighted[0].item() == pytest.approx(0.5 * float((kls[0] * coeffs).sum()))
    _, after = losses.kl_balance(kls, 1.0, alpha)
    assert torch.equal(after, torch.ones(3))  # after the warm-up every group weighs 1


def test_dmol_likelihood_is_a_proper_discrete_density():
    # 8-bit grey images under a single broad logistic: the 256 bins of one pixel sum to 1
    values = torch.arange(256, dtype=torch.float32) / 127.5 - 1.0
    x = values.view(256, 1, 1, 1).expand(256, 3, 1, 1)
    params = torch.zeros(256, 10, 1, 1)  # M = 1: logit 0, means 0, log-scales 0, coefficients 0
    p = torch.exp(-losses.dmol_nll(x, params, 1))  # joint of 3 independent channels with equal values
    per_channel = p ** (1 / 3)
    assert per_channel.sum().item() == pytest.approx(1.0, abs=1e-3)
    # a sharp component at the right value explains the pixel far better than a broad one
    sharp = params.clone()
    sharp[:, [2, 5, 8]] = -5.0  # per channel: mean, log-scale, coefficient (M = 1)
    assert (losses.dmol_nll(x[128:129], sharp[128:129], 1) < losses.dmol_nll(x[128:129], params[128:129], 1)).all()


def test_spectral_regulariser_tracks_the_largest_singular_value():
    conv = torch.nn.Conv2d(4, 6, 3)
    reg = losses.SpectralRegularizer(torch.nn.Sequential(conv), iterations=30)
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert reg().item() == pytest.approx(sigma.item(), rel=1e-3)
    assert "u0" in reg.state_dict()  # its state is saved with the run


def test_a_changed_condition_changes_the_face(trained):
    model = trained[1].shadow
    noise = [torch.randn(2, *s, generator=torch.Generator().manual_seed(1)) for s in model.group_shapes]
    base = torch.full((2, 5), 0.5)
    a = model.sample(base, noise, 0.8)
    changed = base.clone()
    changed[:, CONDITIONS.index("background")] = 1.0
    b = model.sample(changed, noise, 0.8)
    assert (a.int() - b.int()).abs().float().mean() > 0.5


def test_onnx_sampler_parity_and_determinism(trained, tmp_path):
    import onnxruntime as ort

    model = trained[1].shadow.eval()
    spec = export_spec(model)
    card = export_model(Sampler(model), spec, tmp_path / "generator" / "1", {})
    assert card["parity"]["max_abs_diff"]["16"] <= 1.0
    sess = ort.InferenceSession(str(tmp_path / "generator" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = spec.make_inputs(3)
    first, second = sess.run(None, feeds)[0], sess.run(None, feeds)[0]
    assert first.dtype == np.uint8 and first.shape == (3, 64, 64, 3)
    assert np.array_equal(first, second)  # same noise → identical faces
    other = dict(feeds, noise_0=np.random.default_rng(5).standard_normal(feeds["noise_0"].shape).astype(np.float32))
    assert not np.array_equal(first, sess.run(None, other)[0])  # different noise → different faces


def test_presets_build_with_the_declared_hierarchy():
    for name, cfg in GENERATOR_PRESETS.items():
        if name == "celeba64":
            continue  # sized for a GPU
        model = AttributeGenerator(cfg)
        assert len(model.group_shapes) == sum(s.groups for s in cfg.scales)
    with pytest.raises(ValueError):
        AttributeGenerator(config_io.override(GENERATOR_PRESETS["tiny"], {"scales": [[8, 1, 8], [32, 1, 8]]}))


DDP_SCRIPT = """
import sys, numpy as np, torch
from pathlib import Path
from training import config as config_io
from training.run_state import RunFolder
from training.train_generator import TRAIN_PRESETS, train
cfg = config_io.override(TRAIN_PRESETS["tiny"], {"steps": 6, "eval_every": 3})
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (32, 64, 64, 3), dtype=np.uint8)
conds = rng.random((32, 5), dtype=np.float32)
model, ema = train(images, conds, cfg, RunFolder(sys.argv[1], cfg))
import torch.distributed as dist
# DDP keeps the replicas identical: every rank ends with the same weights
w = torch.cat([p.detach().flatten() for p in model.parameters()])
ws = [torch.zeros_like(w) for _ in range(dist.get_world_size())]
dist.all_gather(ws, w)
assert all(torch.allclose(ws[0], x) for x in ws), "replicas diverged"
# one file per rank: the two processes share stdout, so printed lines can interleave
(Path(sys.argv[1]).parent / f"rank{dist.get_rank()}.ok").write_text("ok")
from training.loop import finish_distributed
finish_distributed()
"""


def test_ddp_under_torchrun_on_cpu(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    run_dir = tmp_path / "run"

    def launch():
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
             str(run_dir)],
            capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[1],
        )

    res = launch()
    finished = all((tmp_path / f"rank{r}.ok").exists() for r in (0, 1))
    if res.returncode != 0 and finished and "terminate called without an active exception" in res.stderr:
        # gloo aborted a rank while the group was torn down, after both ranks had checked their
        # replicas (seen once in ~150 local runs, and once in CI, before finish_distributed waited for
        # every rank): run it once more from scratch, so only a repeatable failure fails the test
        shutil.rmtree(run_dir)
        for r in (0, 1):
            (tmp_path / f"rank{r}.ok").unlink()
        res = launch()
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert (tmp_path / "rank0.ok").exists() and (tmp_path / "rank1.ok").exists()
    lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(lines) == 6  # only rank 0 logs
    assert (run_dir / "state.pt").exists()


def test_condition_consistency_term_reaches_the_decoder_and_starts_from_a_run(trained, data, tmp_path):
    """With condition_weight > 0 the loss holds the attribute model's error on prior samples, and
    its gradient reaches the decoder; init_from starts a run from another run's weights."""
    from training.models.attributes import ATTRIBUTE_PRESETS, AttributeNet
    from training.train_generator import nelbo

    torch.manual_seed(0)
    attributes = AttributeNet(ATTRIBUTE_PRESETS["tiny"]).eval().requires_grad_(False)
    model = AttributeGenerator(TINY.model)
    x, c = torch.from_numpy(data[0][:8]), torch.from_numpy(data[1][:8])
    on = config_io.override(TINY, {"condition_weight": 50.0})
    torch.manual_seed(1)
    with_term = nelbo(model, x, c, 100, on, attributes=attributes)
    torch.manual_seed(1)
    without = nelbo(model, x, c, 100, TINY, attributes=attributes)
    assert with_term.condition_drift > 0
    assert torch.isclose(with_term.loss - without.loss, 50.0 * with_term.condition_drift, rtol=1e-3, atol=1e-5)
    head = model.head[-1] if isinstance(model.head, torch.nn.Sequential) else model.head
    (grad,) = torch.autograd.grad(with_term.loss - without.loss, [next(head.parameters())], allow_unused=True)
    assert grad is not None and grad.abs().sum() > 0

    run = trained[2] / "run"
    cfg = config_io.override(on, {"steps": 2, "init_from": str(run)})
    model2, _ = train(*data, cfg, RunFolder(tmp_path / "run", cfg), attributes=attributes)
    start = torch.load(run / "state.pt", map_location="cpu", weights_only=False)["model"]
    fresh = AttributeGenerator(TINY.model).state_dict()
    got = model2.state_dict()
    floats = [k for k, v in start.items() if v.dtype.is_floating_point and not torch.equal(v, fresh[k])]
    # two small steps away from the run it started from, far from a fresh initialisation
    near = sum(float((got[k] - start[k]).abs().sum()) for k in floats)
    far = sum(float((fresh[k] - start[k]).abs().sum()) for k in floats)
    assert 0 < near < 0.2 * far


def test_several_judges_average_their_errors_and_jitter_moves_what_they_see(data):
    """The consistency term with two judges is the mean of each judge's term; the jitter moves
    the judged image (a flat image stays flat) and leaves it untouched at shift 0."""
    from training.models.attributes import ATTRIBUTE_PRESETS, AttributeNet
    from training.train_generator import jitter, nelbo

    torch.manual_seed(0)
    judges = [AttributeNet(ATTRIBUTE_PRESETS["tiny"]).eval().requires_grad_(False) for _ in range(2)]
    model = AttributeGenerator(TINY.model)
    x, c = torch.from_numpy(data[0][:8]), torch.from_numpy(data[1][:8])
    on = config_io.override(TINY, {"condition_weight": 10.0})
    drifts = []
    for js in (judges[:1], judges[1:], judges):
        torch.manual_seed(1)
        drifts.append(float(nelbo(model, x, c, 100, on, attributes=js).condition_drift))
    assert drifts[0] != drifts[1]
    assert abs(drifts[2] - (drifts[0] + drifts[1]) / 2) < 1e-5

    img = torch.rand(4, 3, 16, 16, requires_grad=True)
    assert torch.equal(jitter(img, 0.0), img)
    moved = jitter(img, 2.0)
    assert moved.shape == img.shape and not torch.allclose(moved, img)
    moved.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(jitter(flat, 2.0), flat, atol=1e-6)


def test_readjust_bn_recomputes_the_decoder_statistics_from_prior_samples():
    from training.train_generator import readjust_bn

    torch.manual_seed(0)
    model = AttributeGenerator(GENERATOR_PRESETS["tiny"])
    bns = dict((n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    for i, m in enumerate(bns.values()):  # statistics a reset would visibly lose
        m.running_mean.fill_(0.1 * (i + 1))
        m.running_var.fill_(2.0)
    encoder_before = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in bns.items() if n.startswith("enc_")}
    assert encoder_before
    probe = next(n for n in bns if n.startswith("hier.dec_cells"))
    seen = []
    hook = bns[probe].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    readjust_bn(model, temperature=0.7, batches=2, batch_size=4, seed=3)
    hook.remove()

    # momentum None: the running mean is the plain average of the two batches' means
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen]).mean(0)
    torch.testing.assert_close(bns[probe].running_mean, expected, rtol=1e-4, atol=1e-5)
    for n, (mean, var) in encoder_before.items():  # sampling skips the encoder: its statistics stay
        assert torch.equal(bns[n].running_mean, mean) and torch.equal(bns[n].running_var, var), n
    assert not model.training and all(m.momentum == 0.1 for m in bns.values())
    # the same seed gives the same statistics
    again = AttributeGenerator(GENERATOR_PRESETS["tiny"])
    again.load_state_dict(model.state_dict())
    readjust_bn(again, temperature=0.7, batches=2, batch_size=4, seed=3)
    torch.testing.assert_close(again.state_dict()[f"{probe}.running_var"], model.state_dict()[f"{probe}.running_var"])


class _PatchJudge(torch.nn.Module):
    """Reads eyes and mouth off two fixed patches and the other conditions off the whole image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NHWC [0, 255]
        eyes, mouth = x[:, 20:24, 10:20].mean(dim=(1, 2, 3)), x[:, 44:48, 28:36].mean(dim=(1, 2, 3))
        rest = x.mean(dim=(1, 2, 3))
        return torch.stack([eyes, mouth, rest, rest, rest], dim=1) / 255.0


def test_detail_weights_emphasise_where_the_judge_reads_eyes_and_mouth(data):
    """detail_weight > 0 weighs the reconstruction by the judge's eye + mouth saliency on the real
    image (mean 1 per image); it changes what is minimised but not the reported NELBO."""
    from training.train_generator import detail_weights, nelbo

    x, c = torch.from_numpy(data[0][:4]), torch.from_numpy(data[1][:4])
    w = detail_weights(x, [_PatchJudge()], 10.0)
    assert w.shape == (4, 64, 64) and not w.requires_grad
    assert torch.allclose(w.mean(dim=(1, 2)), torch.ones(4), atol=1e-5)
    low = w[:, 0, 0]  # far from both patches: only the (uniform) base weight
    assert torch.allclose(w[:, 60:, :], low[:, None, None].expand(-1, 4, 64))
    for rows, cols in ((slice(21, 23), slice(12, 18)), (slice(45, 47), slice(30, 34))):  # inside each patch
        assert (w[:, rows, cols] > 5 * low[:, None, None]).all()
    assert torch.allclose(detail_weights(x, [_PatchJudge()], 0.0), torch.ones(4, 64, 64))

    model = AttributeGenerator(TINY.model)
    torch.manual_seed(1)
    weighted = nelbo(model, x, c, 100, config_io.override(TINY, {"detail_weight": 10.0}), attributes=_PatchJudge())
    torch.manual_seed(1)
    plain = nelbo(model, x, c, 100, TINY, attributes=_PatchJudge())
    assert torch.allclose(weighted.nelbo, plain.nelbo) and not torch.isclose(weighted.loss, plain.loss)
