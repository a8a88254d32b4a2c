"""How a seed becomes a face, and the sampling temperature's default and range: the sampler
service, the pipeline and training-side sampling (the critic's fakes, the benchmark) follow it,
so one seed draws one face wherever it is drawn.

Face i with seed s draws the noise of every latent group, in the order of signature.json's
`latent_groups`, from one `numpy.random.default_rng(s)`.
"""

from __future__ import annotations

import numpy as np

# what a request that leaves the temperature out gets: chosen by the generator benchmark for the
# shipped generator (the README's table, every temperature measured); cooler draws give up
# diversity and recall for no gain in Fréchet distance
DEFAULT_TEMPERATURE = 1.1
MAX_TEMPERATURE = 2.0


def around_default(*offsets: float) -> tuple[float, ...]:
    """Temperatures at these offsets from the default: what training draws, shows and judges
    around the temperature users get, so they move with it."""
    return tuple(round(DEFAULT_TEMPERATURE + d, 2) for d in offsets)


def noise_for(seed: int, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """The standard-normal noise of every latent group for one face."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
