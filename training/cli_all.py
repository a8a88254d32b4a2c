"""`facegen-train all`: every stage in order, skipping those whose outputs are up to date.

    (synth) → filter → select → attributes → label → generator → critic (+ refiner)

A stage is up to date when its stamp (runs/all/<stage>.json) holds the hash of its inputs
(the dataset listing, the files it reads, the exports it uses) and its config (preset +
overrides), and its outputs exist. A stale stage starts from an empty run folder, so changed
data never resumes an old run. Each stage writes its export under --exports (the shipped ones by
default: exports/<model>/1), and the stamp records how long it took.
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
    run: Callable[[], None]
    run_dir: Path | None = None  # emptied when the stage is stale
    uses_dataset: bool = True


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
              help="override one stage's config, e.g. generator.steps=2500 (repeatable)")
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True)
@click.option("--exports", type=click.Path(file_okay=False, path_type=Path), default=Path("exports"), show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.9, show_default=True, help="selection: P(female) ≥")
@click.option("--force", multiple=True, help="rerun this stage (and everything after it) even when up to date")
@click.pass_context
def all_cmd(ctx, data, synth_n, preset, overrides, runs, exports, threshold, force) -> None:
    """Run the whole training chain; regenerate every export; skip up-to-date stages."""
    from training.cli_attributes import attributes_cmd, label_cmd
    from training.cli_autoencoder import autoencoder_cmd
    from training.cli_critic import critic_cmd
    from training.cli_filter import filter_cmd, select_cmd
    from training.cli_generator import generator_cmd
    from training.cli_synth import synth

    per_stage = stage_overrides(overrides)
    unknown = set(per_stage) - {"synth", "filter", "attributes", "autoencoder", "generator", "critic"}
    if unknown:
        raise click.BadParameter(f"no stage named {', '.join(sorted(unknown))}", param_hint="--set")
    ex = {m: exports / m / "1" for m in ("filter", "attributes", "generator", "encoder", "critic", "refiner")}
    sel, cond = data / "selection.csv", data / "conditions.csv"

    def train(cmd, name: str, **kw):
        return lambda: ctx.invoke(cmd, data=data, preset=preset, overrides=tuple(per_stage.get(name, [])),
                                  out=runs / name, **kw)

    stages = [
        Stage("filter", lambda: [], lambda: [ex["filter"]], train(filter_cmd, "filter", export_dir=ex["filter"]),
              runs / "filter"),
        Stage("select", lambda: [ex["filter"]], lambda: [sel],
              lambda: ctx.invoke(select_cmd, data=data, model_dir=ex["filter"], threshold=threshold, out=sel)),
        Stage("attributes", lambda: [], lambda: [ex["attributes"]],
              train(attributes_cmd, "attributes", hand_labels=None, export_dir=ex["attributes"]), runs / "attributes"),
        Stage("label", lambda: [ex["attributes"], sel], lambda: [cond],
              lambda: ctx.invoke(label_cmd, data=data, selection=sel, model_dir=ex["attributes"], out=cond)),
        Stage("autoencoder", lambda: [cond], lambda: [runs / "autoencoder" / "model.pt"],
              train(autoencoder_cmd, "autoencoder", conditions_csv=cond), runs / "autoencoder"),
        Stage("generator", lambda: [cond, ex["attributes"], runs / "autoencoder" / "model.pt"],
              lambda: [ex["generator"], ex["encoder"]],
              train(generator_cmd, "generator", conditions_csv=cond, autoencoder_run=runs / "autoencoder",
                    attribute_export=ex["attributes"], export_dir=ex["generator"], encoder_dir=ex["encoder"]),
              runs / "generator"),
        Stage("critic", lambda: [cond, ex["generator"], ex["attributes"], runs / "attributes" / "model.pt",
                                 runs / "autoencoder" / "model.pt"],
              lambda: [ex["critic"], ex["refiner"]],
              train(critic_cmd, "critic", conditions_csv=cond, generator_export=ex["generator"],
                    attributes_run=runs / "attributes", attribute_export=ex["attributes"],
                    autoencoder=runs / "autoencoder",
                    export_critic=ex["critic"], export_refiner=ex["refiner"]), runs / "critic"),
    ]
    if synth_n is not None and not (data / "synth_config.json").exists():
        ctx.invoke(synth, out=data, n=synth_n, **{k: v for k, v in _synth_defaults(per_stage.get("synth", [])).items()})
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
        config = {"preset": preset, "overrides": per_stage.get(stage.name, []),
                  "threshold": threshold if stage.name == "select" else None}
        key = stage_key(stage, config, dataset)
        stamp_path = stamps / f"{stage.name}.json"
        stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
        fresh = stamp.get("key") == key and all(p.exists() for p in stage.writes())
        if fresh and not rerun_rest and stage.name not in force:
            click.echo(f"== {stage.name}: up to date (took {stamp.get('seconds', 0):.0f} s when it ran)")
            summary.append((stage.name, "up to date", stamp.get("seconds")))
            continue
        rerun_rest = True  # later stages read what this one writes
        click.echo(f"== {stage.name}")
        if stage.run_dir is not None and stage.run_dir.exists():
            shutil.rmtree(stage.run_dir)
        t0 = time.perf_counter()
        stage.run()
        seconds = time.perf_counter() - t0
        # the key after running: a stage's own outputs may be another stage's inputs, never its own
        stamp_path.write_text(json.dumps({"key": stage_key(stage, config, dataset), "seconds": round(seconds, 1),
                                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
        summary.append((stage.name, "ran", seconds))
    click.echo("\nstage        status       seconds")
    for name, status, seconds in summary:
        click.echo(f"{name:<12} {status:<12} {'' if seconds is None else f'{seconds:.1f}'}")


def _synth_defaults(overrides: list[str]) -> dict:
    """The synth command's defaults, with synth.KEY=VALUE overrides (n, seed, hand_labels …)."""
    values = {"seed": 0, "size": 64, "hand_labels": 1000, "unlabeled_fraction": 0.2, "label_noise": 0.0,
              "cue_spread": 0.3, "colours": 0, "workers": 2}
    for item in overrides:
        k, _, v = item.partition("=")
        if k not in values:
            raise click.BadParameter(f"synth has no setting {k!r} (one of {', '.join(values)})", param_hint="--set")
        values[k] = type(values[k])(v)
    return values
