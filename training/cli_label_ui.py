"""`facegen-train label-ui`: the labelling page for the hand-labelling sheet (training/labelling/)."""

from __future__ import annotations

from pathlib import Path

import click

from training.stages import open_dataset

DEFAULT_MODEL = Path("exports/attributes/1")


@click.command("label-ui")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="the sheet: the first N female images by file name")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="the address to listen on (the default keeps the page on this machine)")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"an exported attribute model whose predictions are offered as suggestions "
                   f"[default: {DEFAULT_MODEL} when it exists]")
@click.option("--no-model", is_flag=True, help="no model suggestions (the dataset's own labels still are)")
def label_ui_cmd(data, n, port, host, model_dir, no_model) -> None:
    """Label the first N female images by hand in a browser; every confirmation is saved at once
    to <data>/hand_labels.csv, and a restart resumes at the first image not yet labelled."""
    import uvicorn

    from training.labelling.server import make_app
    from training.labelling.sheet import Sheet, model_suggestions

    if model_dir is None and not no_model and DEFAULT_MODEL.is_dir():
        model_dir = DEFAULT_MODEL
    ds = open_dataset(data)
    try:
        suggest = model_suggestions(model_dir) if model_dir is not None and not no_model else None
        sheet = Sheet(ds, n, suggest)
    except (ValueError, OSError, KeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    labelled = len(sheet.labelled())
    click.echo(f"{len(sheet.items)} images to label ({labelled} labelled) → {sheet.path}"
               + (f"; suggestions from {model_dir}" if suggest else ""))
    click.echo(f"open http://{host}:{port}/  (Ctrl-C stops; every confirmation is already saved)")
    uvicorn.run(make_app(sheet), host=host, port=port, log_level="warning")
