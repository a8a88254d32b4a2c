from __future__ import annotations

from pathlib import Path

import pytest

from training.data.synth_dataset import SynthDatasetConfig, write_synth_dataset


@pytest.fixture(scope="module")
def browser():
    """A real headless chromium driven by Playwright (skipped, saying why, without one). One per
    module: Playwright's sync API keeps an event loop running in this thread while it is open, and
    every later test that calls asyncio.run would fail."""
    from tests.browser import launch_browser

    yield from launch_browser()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small procedural face set in the seed's layout (read-only for tests: copy to modify)."""
    root = tmp_path_factory.mktemp("synth")
    write_synth_dataset(root, SynthDatasetConfig(n=160, seed=3, hand_labels=20))
    return root


@pytest.fixture(scope="session")
def real_root(tmp_path_factory) -> Path:
    """Real photographs from scikit-image in the seed's layout (see tests/real_images.py)."""
    from tests.real_images import build_real_smoke

    root = tmp_path_factory.mktemp("real")
    build_real_smoke(root)
    return root


@pytest.fixture(scope="session")
def two_stage(synth_root, tmp_path_factory) -> Path:
    """Tiny two-stage generator runs and exports (autoencoder → latent prior → sampler + encoder),
    trained by the real commands on the female faces of `synth_root` with their true conditions.
    Layout: runs/autoencoder, runs/generator, exports/generator/1, exports/encoder/1."""
    import csv

    from click.testing import CliRunner

    from training.cli import main

    root = tmp_path_factory.mktemp("two_stage")
    with (synth_root / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["female"] == "1"]
    cols = ("file", "eyes", "mouth", "hair_color", "background", "head")
    (root / "conditions.csv").write_text(",".join(cols) + "\n" + "".join(",".join(r[c] for c in cols) + "\n" for r in rows))
    runner = CliRunner()
    res = runner.invoke(main, ["autoencoder", "--data", str(synth_root), "--conditions", str(root / "conditions.csv"),
                               "--preset", "tiny", "--out", str(root / "runs" / "autoencoder")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["generator", "--data", str(synth_root), "--conditions", str(root / "conditions.csv"),
                               "--autoencoder", str(root / "runs" / "autoencoder"), "--preset", "tiny",
                               "--readjust-bn", "5", "--out", str(root / "runs" / "generator"),
                               "--export", str(root / "exports" / "generator" / "1")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return root


@pytest.fixture(scope="module")
def stack():
    """All five services on free 127.0.0.1 ports, the pipeline wired to the other four (one stack
    per test module; a test may stop and restart a service in it)."""
    from tests import servers

    started = servers.start_all()
    yield started
    for s in started.values():
        s.stop()
