"""`facegen-train all`: the whole chain on a small procedural set with the tiny presets; a
second run skips every stage, a changed stage config reruns that stage (and what follows) only,
an interrupted stage resumes."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from training.cli import main
from training.stages.generator_recipe import RECIPE

MODELS = ("filter", "attributes", "generator", "encoder", "redraw", "critic", "refiner")


def _all(tmp_path, *extra):
    args = ["all", "--data", str(tmp_path / "data"), "--synth", "300", "--preset", "tiny", "--runs", str(tmp_path / "runs"),
            "--exports", str(tmp_path / "exports"), "--set", "synth.hand_labels=60", *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _status(output: str) -> dict[str, str]:
    """The closing table: stage → "ran" / "up to date"."""
    return dict(re.findall(r"^(\w+) +(ran|up to date) ", output.split("stage        status")[1], re.M))


def test_chain_runs_every_stage_then_skips_what_is_up_to_date(tmp_path):
    first = _all(tmp_path)
    assert first.exit_code == 0, first.output
    assert set(_status(first.output).values()) == {"ran"}
    for m in MODELS:
        card = json.loads((tmp_path / "exports" / m / "1" / "card.json").read_text())
        assert card["model"] == m and card["parity"]["max_abs_diff"]
    assert (tmp_path / "data" / "conditions.csv").exists()
    mtimes = {m: (tmp_path / "exports" / m / "1" / "model.onnx").stat().st_mtime_ns for m in MODELS}

    again = _all(tmp_path)
    assert set(_status(again.output).values()) == {"up to date"}, again.output
    assert mtimes == {m: (tmp_path / "exports" / m / "1" / "model.onnx").stat().st_mtime_ns for m in MODELS}

    changed = _all(tmp_path, "--set", "critic.refiner_steps=5")
    status = _status(changed.output)
    upstream = ("filter", "select", "attributes", "label", "autoencoder", "generator")
    assert status["critic"] == "ran" and all(status[s] == "up to date" for s in upstream)
    assert (tmp_path / "exports" / "refiner" / "1" / "model.onnx").stat().st_mtime_ns != mtimes["refiner"]
    assert (tmp_path / "exports" / "generator" / "1" / "model.onnx").stat().st_mtime_ns == mtimes["generator"]

    # the generator's recipe stopped inside its last prior fine-tune: the rerun resumes it, keeps the
    # steps that had finished, exports again and reruns what reads the export
    runs, stamps = tmp_path / "runs", tmp_path / "runs" / "all"
    assert {p.name for p in runs.iterdir()} >= {s.name for s in RECIPE}
    (stamps / "generator.started").write_text(json.loads((stamps / "generator.json").read_text())["key"])
    (stamps / "generator.json").unlink()
    (runs / "prior_anchor4" / "metrics.json").unlink()
    kept = {s.name: (runs / s.name / "state.pt").stat().st_mtime_ns for s in RECIPE if s.name != "prior_anchor4"}
    kept.pop(RECIPE[-1].name)  # the last step always runs again: it exports
    resumed = _all(tmp_path)
    status = _status(resumed.output)
    assert "== generator (resuming)" in resumed.output and status["generator"] == status["critic"] == "ran"
    assert all(f"-- {name}: finished" in resumed.output for name in kept)
    assert kept == {name: (runs / name / "state.pt").stat().st_mtime_ns for name in kept}
    assert (runs / "prior_anchor4" / "metrics.json").exists() and not (stamps / "generator.started").exists()
    assert set(json.loads((stamps / "generator.json").read_text())["step_seconds"]) == {"prior_anchor4", RECIPE[-1].name}
    assert (tmp_path / "exports" / "generator" / "1" / "model.onnx").stat().st_mtime_ns != mtimes["generator"]


def test_bad_overrides_are_refused_clearly(tmp_path):
    res = CliRunner().invoke(main, ["all", "--data", str(tmp_path), "--set", "steps=3"])
    assert res.exit_code == 2 and "STAGE.KEY=VALUE" in res.output
    res = CliRunner().invoke(main, ["all", "--data", str(tmp_path), "--set", "nosuch.steps=3"])
    assert res.exit_code == 2 and "no stage named nosuch" in res.output
    res = CliRunner().invoke(main, ["all", "--data", str(tmp_path / "absent")])
    assert res.exit_code == 1 and "--synth" in res.output


def test_a_mistyped_setting_of_a_late_stage_fails_before_the_first_stage_runs(tmp_path):
    result = _all(tmp_path, "--set", "critic.stepz=3")
    assert result.exit_code == 2
    assert "critic: unknown config key 'stepz'" in result.output
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs" / "all").exists()  # nothing ran, not even synth
