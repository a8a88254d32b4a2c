"""Growing a trained latent prior by more finest-scale groups: it starts as the prior it grew from
(the same grids when the new groups' noise is zero, the same KL) with the new groups live,
refuses any other change of shape, and trains and exports through the real stage-2 command."""

from __future__ import annotations

import json
from dataclasses import replace

import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from training.cli import main
from training.models.latent_prior import LATENT_PRIOR_PRESETS, LatentPrior
from training.models.nvae_hierarchy import LatentScale
from training.models.prior_growth import encoder_cells, grow_state_dict

TINY = LATENT_PRIOR_PRESETS["tiny"]  # (8×8, 1 group), (16×16, 1 group)


def _grown(fine_groups: int):
    return replace(TINY, scales=(*TINY.scales[:-1], LatentScale(16, fine_groups, TINY.scales[-1].channels)))


def _trained_prior() -> LatentPrior:
    """A tiny prior whose every weight and BatchNorm statistic is away from its initialisation."""
    torch.manual_seed(0)
    prior = LatentPrior(TINY)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.05 * torch.randn_like(p))
        prior.train()
        for _ in range(3):
            prior(torch.randn(8, 4, 16, 16), torch.rand(8, 5))
    return prior.eval()


def test_a_grown_prior_draws_the_same_grids_with_its_new_groups_live():
    trained = _trained_prior()
    grown = LatentPrior(_grown(3))
    grown.load_state_dict(grow_state_dict(trained.state_dict(), grown))
    grown.eval()
    assert len(grown.group_shapes) == len(trained.group_shapes) + 2
    assert encoder_cells(grown.state_dict())[0] == 3
    cond = torch.rand(4, 5)
    noise = [torch.randn(4, *s) for s in trained.group_shapes]
    quiet = noise + [torch.zeros(4, *s) for s in grown.group_shapes[2:]]
    loud = noise + [torch.randn(4, *s) for s in grown.group_shapes[2:]]
    with torch.no_grad():
        assert torch.equal(grown.sample(cond, quiet, 1.1), trained.sample(cond, noise, 1.1))
        # the new groups are live from the start: their noise moves the grid (a little)
        moved = (grown.sample(cond, loud, 1.1) - trained.sample(cond, noise, 1.1)).abs().max()
        assert 0 < moved < 0.5
        grid = torch.randn(4, 4, 16, 16)
        torch.manual_seed(1)
        nll_t, kl_t = trained(grid, cond)
        torch.manual_seed(1)
        nll_g, kl_g = grown(grid, cond)
    assert torch.allclose(nll_g, nll_t, rtol=0.02)  # the new groups' z enters through small weights
    assert all(torch.equal(a, b) for a, b in zip(kl_g, kl_t, strict=False))
    assert all(float(k.abs().max()) == 0.0 for k in kl_g[2:])  # the new groups start with q = p


@pytest.mark.parametrize("scales, message", [
    ((LatentScale(8, 2, 16), LatentScale(16, 2, 16)), "only the finest scale may gain groups"),
    ((LatentScale(8, 1, 16), LatentScale(16, 1, 24)), "shape"),
])
def test_growing_refuses_any_other_change(scales, message):
    trained = _trained_prior()
    target = LatentPrior(replace(TINY, scales=scales))
    with pytest.raises(ValueError, match=message):
        grow_state_dict(trained.state_dict(), target)
    grown = LatentPrior(_grown(2))
    grown_weights = grow_state_dict(trained.state_dict(), grown)
    with pytest.raises(ValueError, match="only the finest scale may gain groups"):  # shrinking is not growing
        grow_state_dict(grown_weights, LatentPrior(TINY))


def test_stage_two_grows_a_trained_prior_and_exports_its_extra_noise(two_stage, synth_root, tmp_path):
    runs = two_stage / "runs"
    out, export = tmp_path / "grown", tmp_path / "export"
    res = CliRunner().invoke(main, [
        "generator", "--data", str(synth_root), "--conditions", str(two_stage / "conditions.csv"),
        "--autoencoder", str(runs / "autoencoder"), "--preset", "tiny", "--readjust-bn", "2",
        "--set", f"init_from={runs / 'generator'}", "--set", "model.scales=[[8,1,16],[16,2,16]]",
        "--out", str(out), "--export", str(export)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["held_out"] is None or metrics["held_out"]["groups"] == 3
    sig = json.loads((export / "signature.json").read_text())
    assert len(sig["latent_groups"]) == 3
    session = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sum(i.name.startswith("noise_") for i in session.get_inputs()) == 3
