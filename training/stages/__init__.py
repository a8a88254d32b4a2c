"""The training stages as plain functions: the `facegen-train` commands and `facegen-train all`
call them alike, and none of them knows about the command line.

A problem the user must fix (a missing input, a config that does not fit, a dataset that cannot
be learnt from) raises `StageError`, whose message is for the user; the command group shows it
without a traceback. Progress goes to tqdm bars, messages to `echo(text, err=False)`, which
click.echo satisfies and `print_echo` imitates.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol


class StageError(Exception):
    """A stage cannot run as asked; the message says what to change."""


class MissingRun(StageError, FileNotFoundError):
    """A stage's input run is not there yet; the message says which command makes it."""


class Echo(Protocol):
    def __call__(self, message: str, err: bool = False) -> None: ...


def print_echo(message: str, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


def configure(presets: dict, preset: str, overrides: Sequence[str] = ()):
    """A stage's typed config: the named preset with KEY=VALUE overrides (`--set`)."""
    from training import config as config_io

    if preset not in presets:
        raise StageError(f"no preset {preset!r} (one of {', '.join(presets)})")
    try:
        return config_io.override(presets[preset], config_io.parse_overrides(tuple(overrides)))
    except ValueError as exc:  # ConfigError: an unknown key or a value of the wrong type
        raise StageError(str(exc)) from exc


def open_dataset(data: Path):
    """The dataset at `data`; a layout that cannot be read is the user's to fix."""
    from services.shared.layouts import open_dataset as open_any

    try:
        return open_any(data)
    except ValueError as exc:
        raise StageError(str(exc)) from exc


def run_folder(out: Path, cfg):
    """The stage's run folder (a rerun resumes from its state); one that holds another config is
    refused with the difference."""
    from training.run_state import RunFolder

    try:
        return RunFolder(out, cfg)
    except ValueError as exc:
        raise StageError(str(exc)) from exc


def step_progress(bar) -> Callable[[int, dict], None]:
    """A training-loop progress callback that moves a tqdm bar and shows the loss."""

    def progress(step: int, metrics: dict) -> None:
        bar.n = step + 1
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        bar.refresh()

    return progress
