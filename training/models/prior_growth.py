"""Grow a trained latent prior's finest scale by more latent groups, keeping what it computes.

The finest scale is where the grid's detail lives and where the trained prior's KL concentrates,
so it is where more groups should buy the most; training a deeper hierarchy from scratch costs
every ELBO step the shallower one already took. The grown prior starts as the trained one:

- the new groups come last in decoding order (after the finest scale's trained groups), so every
  trained group keeps its index; each new group's `combine` passes the decoder state through and
  reads its z only through small weights, its decoder cell's last BatchNorm is zeroed (the cell is
  the identity), and its prior and posterior are standard normals (KL 0): with the new groups'
  noise at zero the grown prior draws the trained one's grids;
- the encoder pairs the decoder's last group of a scale with the scale's first encoder cell, so
  the new encoder cells go first at the finest scale, each zeroed to the identity: the trained
  cells see the features they were trained on, and the new groups read the stem's features.
"""

from __future__ import annotations

import re

import torch

from training.models.latent_prior import LatentPrior

# How much of its default initialisation a new group's z keeps in `combine`. Zero would make the
# new group dead: with its posterior equal to its prior, z is noise the data does not correlate
# with, `combine` only ever sees noise gradients for it and the posterior none of use (measured:
# the group's KL 0.0 nats after 3000 steps).
Z_WEIGHT_SCALE = 0.1
_ENCODER = re.compile(r"^hier\.enc_cells\.(\d+)\.(\d+)\.")
_FINE_ENCODER = re.compile(r"^hier\.enc_cells\.0\.(\d+)\.(.+)$")


def encoder_cells(state: dict[str, torch.Tensor]) -> list[int]:
    """Groups per scale, finest first, of the prior whose weights these are (one encoder cell each)."""
    cells: dict[int, set[int]] = {}
    for key in state:
        if m := _ENCODER.match(key):
            cells.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return [len(cells[s]) for s in sorted(cells)]


@torch.no_grad()
def _make_identity(model: LatentPrior, new_cells: int, first_new_group: int) -> None:
    hier = model.hier
    for i in range(new_cells):
        cell = hier.enc_cells[0][i]
        cell.conv2.weight.zero_()
        cell.conv2.bias.zero_()
    for g in range(first_new_group, len(hier.combine)):
        conv = hier.combine[g]
        channels = conv.out_channels
        conv.weight[:, channels:].mul_(Z_WEIGHT_SCALE)  # small, not zero: the posterior's only gradient
        conv.weight[:, :channels].zero_()
        conv.weight[:, :channels, 0, 0].copy_(torch.eye(channels))
        conv.bias.zero_()
        hier.posterior[g].weight.zero_()
        hier.posterior[g].bias.zero_()
        hier.dec_cells[g].bn3.weight.zero_()
        hier.dec_cells[g].bn3.bias.zero_()


def grow_state_dict(state: dict[str, torch.Tensor], model: LatentPrior) -> dict[str, torch.Tensor]:
    """A state dict for `model` from the weights of a prior that differs from it only by fewer
    groups at the finest scale. ValueError when the two differ in anything else."""
    old, new = encoder_cells(state), [s.groups for s in reversed(model.cfg.scales)]
    extra = new[0] - old[0] if old else -1
    if extra < 0 or old[1:] != new[1:]:
        raise ValueError(f"cannot grow a prior with groups per scale {old[::-1]} (coarsest first) into one with "
                         f"{new[::-1]}: only the finest scale may gain groups")
    old_groups = len(model.hier.combine) - extra
    _make_identity(model, extra, old_groups)
    grown = model.state_dict()
    for key, value in state.items():
        target = key
        if m := _FINE_ENCODER.match(key):
            target = f"hier.enc_cells.0.{int(m.group(1)) + extra}.{m.group(2)}"
        if target not in grown:
            raise ValueError(f"{key}: no such weight in the grown prior (it must differ only at the finest scale)")
        if grown[target].shape != value.shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)} against the grown prior's {tuple(grown[target].shape)}")
        grown[target] = value.to(grown[target].dtype)
    return grown
