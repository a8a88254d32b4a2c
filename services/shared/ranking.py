"""Which candidate a face is: one rule for the pipeline's oversampling and the generator benchmark,
so the benchmark judges the very faces the pipeline serves.

With oversample k, face i of a request is chosen among candidates i·k … i·k + k − 1 (candidate j
drawn with seed `seed + j`): the one with the highest
    realness − SELECTION_WEIGHT · condition error
where realness is the critic's (after the retouch, when there is one) and the condition error
the mean absolute difference between what the attribute model reads and what was requested.
Each face keeps its own group, so the conditions a request spreads over its faces stay spread
(a choice over the whole request would favour the conditions the generator draws best), and faces
can be streamed as their group is done.
"""

from __future__ import annotations

import numpy as np

SELECTION_WEIGHT = 4.0  # a condition error of 0.05 costs as much as 0.2 realness
# what a request that leaves oversample out gets: chosen by the generator benchmark (the README's
# table: the served column against the sampler alone); every candidate costs a sample, a retouch
# and the checks
DEFAULT_OVERSAMPLE = 4


def condition_error(measured: np.ndarray, requested: np.ndarray) -> np.ndarray:
    """Mean absolute difference over the conditions (the last axis)."""
    return np.abs(np.asarray(measured, np.float32) - np.asarray(requested, np.float32)).mean(axis=-1)


def rank(realness, error):
    return realness - SELECTION_WEIGHT * error


def best_of_groups(ranks: np.ndarray, k: int) -> np.ndarray:
    """Index of the kept candidate of every group of k consecutive candidates (ties: the first)."""
    ranks = np.asarray(ranks, np.float64)
    if len(ranks) % k:
        raise ValueError(f"{len(ranks)} candidates are not whole groups of {k}")
    return np.arange(0, len(ranks), k) + ranks.reshape(-1, k).argmax(axis=1)
