"""`facegen-train evaluate-generator`: the sample-quality benchmark of an exported generator."""

from __future__ import annotations

import json
from pathlib import Path

import click

from services.shared.sampling import DEFAULT_TEMPERATURE, MAX_TEMPERATURE


@click.command("evaluate-generator")
@click.option("--export", "export_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("exports/generator/1"), show_default=True, help="the exported generator to judge")
@click.option("--data", "real_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("data/bench"), show_default=True,
              help="a labelled set the generator never saw (labels.csv with conditions, female, skin_tone)")
@click.option("--judge", "judge_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("exports/judge/1"), show_default=True,
              help="an attribute model that took no part in training the generator")
@click.option("--n", type=click.IntRange(min=10), default=1000, show_default=True, help="faces per set")
@click.option("--temperature", "temperatures", type=click.FloatRange(0.0, MAX_TEMPERATURE), multiple=True,
              default=(DEFAULT_TEMPERATURE,),
              show_default=True, help="repeat for several; the goals are judged at the first")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the report here as JSON (the table goes to stdout)")
@click.option("--retouch", "retouch_export", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="a refiner export: the first temperature's faces are judged once more after its retouch")
@click.option("--samples", "samples_png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write 64 of the judged samples here as a PNG grid (and the served ones as <name>_served.png)")
@click.option("--oversample", type=click.IntRange(min=1), default=None,
              help="also judge what the pipeline serves: each face the best of k candidates by its rule "
                   "(with --critic and --attributes; retouched when --retouch is given)")
@click.option("--critic", "critic_export", type=click.Path(file_okay=False, path_type=Path),
              default=Path("exports/critic/1"), show_default=True, help="the critic the pipeline ranks by")
@click.option("--attributes", "attributes_export", type=click.Path(file_okay=False, path_type=Path),
              default=Path("exports/attributes/1"), show_default=True, help="the attribute model the pipeline ranks by")
def evaluate_generator_cmd(export_dir, real_dir, judge_dir, n, temperatures, seed, out, retouch_export, samples_png,
                           oversample, critic_export, attributes_export) -> None:
    """Judge an exported generator's faces with judges that took no part in training it."""
    from training.quality.benchmark import BenchmarkConfig, Served, evaluate, table

    cfg = BenchmarkConfig(n=n, temperatures=tuple(temperatures), seed=seed)
    serve = Served(critic_export, attributes_export, oversample) if oversample else None
    try:
        report = evaluate(export_dir, real_dir, judge_dir, cfg, log=lambda m: click.echo(m, err=True),
                          samples_png=samples_png, retouch_export=retouch_export, serve=serve)
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(table(report))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
