"""`facegen-train all`: every stage in order, skipping those whose outputs are up to date.

    (synth) → filter → select → attributes → label → generator → critic (+ refiner)

A stage is up to date when its stamp (runs/all/<stage>.json) holds the hash of its inputs
(the dataset listing, the files it reads, the exports it uses) and its config (preset +
overrides), and its outputs exist. A stale stage starts from empty run folders, so changed data
never resumes an old run; a stage that was interrupted (its start stamp, runs/all/<stage>.started,
holds the same hash) resumes where it stopped. The generator stage is the whole recipe of
stages/generator_recipe.py (stage 2's runs and fine-tunes, then stage 3). Each stage writes its
export under --exports (the shipped ones by default: exports/<model>/1), and the stamp records how
long it took.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

STAGE_OUTPUTS = ("selection.csv", "conditions.csv")  # written into the dataset folder by stages


@dataclass(frozen=True)
class Stage:
    name: str
    reads: Callable[[], list[Path]]  # files whose bytes are part of the stage's key
    writes: Callable[[], list[Path]]
    run: Callable[[], object]
    run_dirs: tuple[Path, ...] = ()  # emptied when the stage is stale
    overrides: tuple[str, ...] = ()  # its `--set`s (KEY=VALUE): part of its key
    uses_dataset: bool = True
    stamp: Callable[[object], dict] = lambda result: {}  # what of run()'s result the stamp keeps


def dataset_fingerprint(root: Path) -> str:
    """Hash of every file's path, size and modification time (not its bytes: 10k images would
    take longer to read than to list), leaving out the CSVs the stages write."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in STAGE_OUTPUTS:
            st = p.stat()
            h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def file_hash(path: Path) -> str:
    """sha256 of a file, or of an export folder's model.onnx; "missing" before it exists."""
    from services.shared.exports import sha256_file

    path = path / "model.onnx" if path.is_dir() else path
    return sha256_file(path) if path.exists() else "missing"


def stage_key(stage: Stage, config: dict, dataset: str) -> str:
    payload = {"stage": stage.name, "config": config, "reads": {str(p): file_hash(p) for p in stage.reads()},
               "dataset": dataset if stage.uses_dataset else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def stage_overrides(overrides: tuple[str, ...]) -> dict[str, list[str]]:
    """`generator.steps=2500` → {"generator": ["steps=2500"]}."""
    out: dict[str, list[str]] = {}
    for item in overrides:
        stage, sep, rest = item.partition(".")
        if not sep or "=" not in rest:
            raise click.BadParameter(f"{item!r}: expected STAGE.KEY=VALUE, e.g. generator.steps=2500", param_hint="--set")
        out.setdefault(stage, []).append(rest)
    return out


@click.command("all")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--synth", "synth_n", type=click.IntRange(min=1), default=None,
              help="render this many procedural faces into --data first (when it does not hold them yet)")
@click.option("--preset", type=click.Choice(["tiny", "default"]), default="default", show_default=True,
              help="every stage's preset")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.KEY=VALUE",
              help="override one stage's config, e.g. critic.steps=2500 (repeatable); generator.KEY=VALUE reaches "
                   "every stage-2 step of the generator's recipe, decoder.KEY=VALUE its stage 3")
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True)
@click.option("--exports", type=click.Path(file_okay=False, path_type=Path), default=Path("exports"), show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.9, show_default=True, help="selection: P(female) ≥")
@click.option("--force", multiple=True, help="rerun this stage (and everything after it) even when up to date")
def all_cmd(data, synth_n, preset, overrides, runs, exports, threshold, force) -> None:
    """Run the whole training chain; regenerate every export; skip up-to-date stages."""
    from training import train_attributes, train_autoencoder, train_critic, train_filter
    from training.stages import StageError, attributes, configure, critic, generator, generator_recipe
    from training.stages import data as data_stages
    from training.stages import filter as filter_stage

    per_stage = stage_overrides(overrides)
    unknown = set(per_stage) - {"synth", "filter", "attributes", "autoencoder", "generator", "decoder", "critic"}
    if unknown:
        raise click.BadParameter(f"no stage named {', '.join(sorted(unknown))}", param_hint="--set")
    # every stage's config is read before the first one runs: a mistyped key fails now, not hours in
    presets = {"filter": train_filter.TRAIN_PRESETS, "attributes": train_attributes.TRAIN_PRESETS,
               "autoencoder": train_autoencoder.TRAIN_PRESETS, "critic": train_critic.TRAIN_PRESETS}
    cfg = {}
    for name, stage_presets in presets.items():
        try:
            cfg[name] = configure(stage_presets, preset, per_stage.get(name, []))
        except StageError as exc:
            raise click.BadParameter(f"{name}: {exc}", param_hint="--set") from None
    prior_set, decoder_set = per_stage.get("generator", []), per_stage.get("decoder", [])
    try:
        generator_recipe.step_configs(preset, prior_set, decoder_set)
    except StageError as exc:
        raise click.BadParameter(f"generator: {exc}", param_hint="--set") from None
    recipe_dirs = tuple(runs / s.name for s in generator_recipe.RECIPE)
    decoder_run, prior_run = (runs / generator_recipe.last(kind) for kind in ("decoder", "prior"))
    def own(name: str) -> tuple[str, ...]:
        return tuple(per_stage.get(name, []))

    ex = {m: exports / m / "1" for m in ("filter", "attributes", "generator", "encoder", "redraw", "critic",
                                          "refiner")}
    sel, cond = data / "selection.csv", data / "conditions.csv"
    echo = click.echo

    stages = [
        Stage("filter", lambda: [], lambda: [ex["filter"]],
              lambda: filter_stage.train_filter(data, cfg["filter"], runs / "filter", ex["filter"], echo=echo),
              (runs / "filter",), own("filter")),
        Stage("select", lambda: [ex["filter"]], lambda: [sel],
              lambda: data_stages.select(data, ex["filter"], threshold, sel, echo=echo)),
        Stage("attributes", lambda: [], lambda: [ex["attributes"]],
              lambda: attributes.train_attributes(data, cfg["attributes"], runs / "attributes",
                                                  export_dir=ex["attributes"], echo=echo),
              (runs / "attributes",), own("attributes")),
        Stage("label", lambda: [ex["attributes"], sel], lambda: [cond],
              lambda: data_stages.label(data, ex["attributes"], sel, cond, echo=echo)),
        Stage("autoencoder", lambda: [cond], lambda: [runs / "autoencoder" / "model.pt"],
              lambda: generator.train_autoencoder(data, cfg["autoencoder"], runs / "autoencoder", cond, echo=echo),
              (runs / "autoencoder",), own("autoencoder")),
        Stage("generator", lambda: [cond, ex["attributes"], runs / "attributes" / "model.pt",
                                    runs / "autoencoder" / "model.pt"],
              lambda: [ex["generator"], ex["encoder"], ex["redraw"]],
              lambda: generator_recipe.run_recipe(data, preset, runs, cond, ex["attributes"], runs / "attributes",
                                                  ex["generator"], prior_set, decoder_set, echo=echo),
              # stage 3's settings keep their prefix: generator.steps=5 and decoder.steps=5 are not one key
              recipe_dirs, (*prior_set, *(f"decoder.{o}" for o in decoder_set)),
              stamp=lambda seconds: {"step_seconds": seconds}),
        Stage("critic", lambda: [cond, ex["generator"], ex["attributes"], runs / "attributes" / "model.pt",
                                 decoder_run / "model.pt", prior_run / "config.json"],
              lambda: [ex["critic"], ex["refiner"]],
              lambda: critic.train_and_export(data, cond, ex["generator"], runs / "attributes", ex["attributes"],
                                              cfg["critic"], runs / "critic", ex["critic"], ex["refiner"], echo=echo,
                                              autoencoder=decoder_run, prior=prior_run),
              (runs / "critic",), own("critic")),
    ]
    if synth_n is not None and not (data / "synth_config.json").exists():
        synth_cfg, workers = _synth_config(synth_n, per_stage.get("synth", []))
        data_stages.synth(data, synth_cfg, workers=workers, echo=echo)
    if not data.is_dir():
        raise click.ClickException(f"{data} does not exist (pass --synth N to render a procedural set there)")
    unknown_force = set(force) - {s.name for s in stages}
    if unknown_force:
        raise click.BadParameter(f"no stage named {', '.join(sorted(unknown_force))}", param_hint="--force")

    stamps = runs / "all"
    stamps.mkdir(parents=True, exist_ok=True)
    dataset = dataset_fingerprint(data)
    rerun_rest = False
    summary = []
    for stage in stages:
        config = {"preset": preset, "overrides": list(stage.overrides),
                  "threshold": threshold if stage.name == "select" else None}
        key = stage_key(stage, config, dataset)
        stamp_path, started_path = stamps / f"{stage.name}.json", stamps / f"{stage.name}.started"
        stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
        fresh = stamp.get("key") == key and all(p.exists() for p in stage.writes())
        if fresh and not rerun_rest and stage.name not in force:
            click.echo(f"== {stage.name}: up to date (took {stamp.get('seconds', 0):.0f} s when it ran)")
            summary.append((stage.name, "up to date", stamp.get("seconds")))
            continue
        rerun_rest = True  # later stages read what this one writes
        # the same inputs and config as a start that did not finish: its run folders resume
        resume = started_path.exists() and started_path.read_text().strip() == key and stage.name not in force
        click.echo(f"== {stage.name}" + (" (resuming)" if resume else ""))
        if not resume:
            for run_dir in stage.run_dirs:
                if run_dir.exists():
                    shutil.rmtree(run_dir)
        started_path.write_text(key + "\n")
        t0 = time.perf_counter()
        result = stage.run()
        seconds = time.perf_counter() - t0
        # the key after running: a stage's own outputs may be another stage's inputs, never its own
        stamp_path.write_text(json.dumps({"key": stage_key(stage, config, dataset), "seconds": round(seconds, 1),
                                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **stage.stamp(result)},
                                         indent=2) + "\n")
        started_path.unlink()
        summary.append((stage.name, "ran", seconds))
    click.echo("\nstage        status       seconds")
    for name, status, seconds in summary:
        click.echo(f"{name:<12} {status:<12} {'' if seconds is None else f'{seconds:.1f}'}")


def _synth_config(n: int, overrides: list[str]):
    """The procedural set of `--synth N` and the processes that render it: the synth command's
    defaults with synth.KEY=VALUE overrides (seed, hand_labels, workers …)."""
    from training.cli_synth import synth
    from training.stages import StageError
    from training.stages.data import synth_config

    values = {p.name: p.default for p in synth.params if p.name not in ("out", "n")}
    values["workers"] = 2  # the chain's own default (the command's is one process per core)
    for item in overrides:
        k, _, v = item.partition("=")
        if k not in values:
            raise click.BadParameter(f"synth has no setting {k!r} (one of {', '.join(values)})", param_hint="--set")
        values[k] = type(values[k])(v)
    workers = values.pop("workers")
    try:
        return synth_config(n, **values), workers
    except StageError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None
