"""`facegen-train checkpoint`: a run folder's compact checkpoint (training/checkpoints/)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("checkpoint")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
def checkpoint_cmd(run: Path, out: Path) -> None:
    """Keep RUN's weights compactly in OUT: a stage-2 run's EMA in fp16, a stage-1 or stage-3
    run's model.pt as it is; its config.json beside them. Later runs read OUT as they read RUN
    (`--set init_from=OUT`, `--prior OUT`, `--autoencoder OUT`)."""
    from training.checkpoint import compact_checkpoint

    try:
        files = compact_checkpoint(run, out)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    for f in files:
        click.echo(f"{f} ({f.stat().st_size / 2**20:.2f} MiB)")
