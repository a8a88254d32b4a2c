"""What the facegen-train commands share: opening a dataset with a user-facing error, and a
progress bar for the training loops. Commands import these from here, not from each other."""

from __future__ import annotations

from pathlib import Path

import click


def open_dataset_or_exit(data: Path):
    """The dataset at `data`, or a message for the user (not a traceback) when it cannot be read."""
    from services.shared.layouts import open_dataset

    try:
        return open_dataset(data)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def step_progress(bar):
    """A training-loop progress callback that moves a tqdm bar and shows the loss."""

    def progress(step: int, metrics: dict) -> None:
        bar.n = step + 1
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        bar.refresh()

    return progress
