from __future__ import annotations

from pathlib import Path

import pytest

from training.data.synth_dataset import SynthDatasetConfig, write_synth_dataset


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
