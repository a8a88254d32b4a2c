"""The generator's stages: 1, the autoencoder (pixels ↔ latent grid); 2, the conditional NVAE
prior over its grid, with the sampler and encoder exports; 3, the decoder adapted to what the
prior samples."""

from __future__ import annotations

import json
from pathlib import Path

from training.stages import Echo, StageError, print_echo, run_folder, step_progress


def train_autoencoder(data: Path, cfg, out: Path, conditions_csv: Path | None = None,
                      echo: Echo = print_echo) -> dict:
    """Stage 1 on the images of conditions.csv; writes model.pt (EMA weights + latent scale) and
    metrics.json into `out`; returns the report."""
    import torch
    from tqdm import tqdm

    from training.generator_data import load_generator_set
    from training.models.autoencoder import Autoencoder
    from training.train_autoencoder import fit_scale, reconstruction_error, train

    try:
        Autoencoder(cfg.model)  # an inconsistent shape fails here, before the data is read
    except ValueError as exc:
        raise StageError(str(exc)) from exc
    run = run_folder(out, cfg)
    gs = load_generator_set(data, conditions_csv, cfg.model.image_size, cfg.seed, echo)
    with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
        _, ema = train(gs.images[~gs.held_out], cfg, run, progress=step_progress(bar))
    model = ema.shadow.eval()
    fit_scale(model, gs.images[~gs.held_out])
    report = {"held_out": reconstruction_error(model, gs.images[gs.held_out]) if gs.held_out.any() else None,
              "latent_scale": model.latent_scale.tolist()}
    torch.save(model.state_dict(), run.root / "model.pt")
    (run.root / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    run.close()
    echo(json.dumps(report, indent=2))
    return report


def _attribute_model(attributes_run: Path | None):
    """The trained attribute model a condition-consistency term reads samples with."""
    from training.train_attributes import load_trained

    if attributes_run is None or not (attributes_run / "model.pt").exists():
        raise StageError(f"condition_weight > 0 needs the trained attribute model: {attributes_run}/model.pt "
                         "not found (`facegen-train attributes --out runs/attributes`)")
    return load_trained(attributes_run)[0]


def _critic(cfg):
    """The frozen critic of the prior's realness term, or None when the term is off."""
    from training.train_critic import load_critic

    if cfg.realness_weight <= 0:
        return None
    folder = Path(cfg.realness_from)
    if not (folder / "state.pt").exists():
        raise StageError(f"realness_weight > 0 needs a critic: {folder}/state.pt not found "
                         "(realness_from: the critic_a folder of a `facegen-train critic` run)")
    return load_critic(folder)


def train_prior(data: Path, cfg, out: Path, autoencoder_run: Path, conditions_csv: Path | None = None,
                attribute_export: Path | None = None, attributes_run: Path | None = None,
                export_dir: Path | None = None, encoder_dir: Path | None = None, echo: Echo = print_echo) -> dict | None:
    """Stage 2 on stage 1's grids; reports, samples, sweeps and exports the sampler and encoder.
    `attributes_run` (the trained attribute model) reads the prior's samples when
    cfg.condition_weight > 0; `attribute_export` measures the card's condition fidelity. Returns
    the report (None on a torchrun rank other than 0, which neither evaluates nor exports)."""
    import torch
    from tqdm import tqdm

    from training import config as config_io
    from training.generator_data import load_generator_set
    from training.loop import finish_distributed
    from training.models.latent_prior import LatentPrior, TwoStageSampler
    from training.train_generator import readjust_bn
    from training.train_latent_prior import Consistency, encode_set, held_out, samples_judged, train
    from training.two_stage import export_two_stage, load_autoencoder, load_prior, sampler_report

    try:
        LatentPrior(cfg.model)  # an inconsistent hierarchy fails here, before the data is read
    except ValueError as exc:
        raise StageError(str(exc)) from exc
    run = run_folder(out, cfg)
    autoencoder = load_autoencoder(autoencoder_run)
    ae_cfg = autoencoder.cfg
    if (ae_cfg.latent_size, ae_cfg.latent_channels) != (cfg.model.grid_size, cfg.model.data_channels):
        raise StageError(
            f"the prior models a {cfg.model.grid_size}×{cfg.model.grid_size}×{cfg.model.data_channels} grid but "
            f"{autoencoder_run} makes {ae_cfg.latent_size}×{ae_cfg.latent_size}×{ae_cfg.latent_channels}")
    critic = _critic(cfg)  # a missing critic fails here, before the data is read
    gs = load_generator_set(data, conditions_csv, ae_cfg.image_size, cfg.seed, echo)
    train_images = gs.images[~gs.held_out]
    train_grids = encode_set(autoencoder, train_images)
    judge = None
    if samples_judged(cfg):
        anchor = load_prior(Path(cfg.anchor_from), seed=cfg.seed) if cfg.anchor_from and cfg.anchor_weight > 0 else None
        attributes = _attribute_model(attributes_run) if cfg.condition_weight > 0 else None
        real = torch.from_numpy(train_images) if cfg.realness_critic_lr > 0 else None
        judge = Consistency(autoencoder, attributes, anchor, critic, real)
    with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
        _, ema = train(train_grids, gs.conditions[~gs.held_out], cfg, run, progress=step_progress(bar), judge=judge)
    if not finish_distributed():
        return None
    prior = ema.shadow.eval()
    report = {"held_out": None, "autoencoder": str(autoencoder_run)}
    if gs.held_out.any():
        report["held_out"] = held_out(prior, encode_set(autoencoder, gs.images[gs.held_out], mirrored=False)[0],
                                      gs.conditions[gs.held_out])
    else:
        echo("warning: no image was held out (5 % by file name), so there is no held-out score", err=True)
    if cfg.readjust_batches:
        readjust_bn(prior, cfg.readjust_temperature, cfg.readjust_batches, seed=cfg.seed)
        report["readjust_bn"] = {"batches": cfg.readjust_batches, "temperature": cfg.readjust_temperature}
    report.update(sampler_report(TwoStageSampler(prior, autoencoder, cfg.refine).eval(), run.root, attribute_export))
    (run.root / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    run.close()
    echo(json.dumps(report, indent=2))
    if export_dir is not None:
        card = {"training_data": {"root": str(data), "images": int((~gs.held_out).sum())},
                "config": config_io.to_dict(cfg), "autoencoder_config": config_io.to_dict(ae_cfg), "metrics": report}
        export_two_stage(prior, autoencoder, cfg.refine, export_dir, encoder_dir, card, echo=echo)
    return report


def adapt_decoder(data: Path, cfg, out: Path, autoencoder_run: Path, prior_run: Path,
                  conditions_csv: Path | None = None, attribute_export: Path | None = None,
                  export_dir: Path | None = None, snapshot: int | None = None, attributes_run: Path | None = None,
                  echo: Echo = print_echo) -> dict:
    """Stage 3: fine-tune stage 1's decoder on what the frozen prior samples (beside its
    reconstructions); `cfg.model` is replaced by the autoencoder's own. `attributes_run` (the
    trained attribute model) reads the decoded samples when cfg.condition_weight > 0. Writes model.pt like stage
    1; with `snapshot`, that step's EMA weights are the result (the quality curve may peak before
    the end). Exports the sampler (prior + this decoder) and the encoder beside it."""
    import dataclasses

    import numpy as np
    import torch
    from tqdm import tqdm

    from training import config as config_io
    from training.generator_data import load_generator_set
    from training.models.latent_prior import TwoStageSampler
    from training.train_autoencoder import reconstruction_error, train
    from training.two_stage import export_two_stage, load_autoencoder, load_prior, refinement, sampler_report

    autoencoder = load_autoencoder(autoencoder_run)
    # the architecture is the one being fine-tuned, whatever the preset says
    cfg = dataclasses.replace(cfg, model=autoencoder.cfg, init_from=str(autoencoder_run))
    run = run_folder(out, cfg)
    prior, refine = load_prior(prior_run, seed=cfg.seed), refinement(prior_run)
    if (prior.cfg.grid_size, prior.cfg.data_channels) != (autoencoder.cfg.latent_size, autoencoder.cfg.latent_channels):
        raise StageError(f"{prior_run}'s prior models another grid than {autoencoder_run} makes")
    if snapshot is not None and not cfg.snapshot_every:
        raise StageError("--snapshot needs snapshot_every > 0 in the config")
    reader = None
    if cfg.condition_weight > 0:
        reader = _attribute_model(attributes_run)
    gs = load_generator_set(data, conditions_csv, cfg.model.image_size, cfg.seed, echo)
    conditions = torch.from_numpy(gs.conditions[~gs.held_out].astype(np.float32))

    @torch.no_grad()
    def prior_sampler(k: int, temperatures: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cond = conditions[torch.randint(len(conditions), (k,), generator=gen)]
        scale = temperatures[:, None, None, None]  # mu + T·sigma·noise = mu + sigma·(T·noise)
        noise = [scale * torch.randn(k, *s, generator=gen) for s in prior.group_shapes]
        return prior.sample(cond, noise, 1.0), cond

    with tqdm(total=cfg.steps, desc="train", unit="step") as bar:
        _, ema = train(gs.images[~gs.held_out], cfg, run, progress=step_progress(bar), prior_sampler=prior_sampler,
                       attributes=reader)
    model = ema.shadow.eval().requires_grad_(False)
    if snapshot is not None:
        path = run.snapshot_path(snapshot)
        if not path.exists():
            raise StageError(f"{path} not found (snapshots: every snapshot_every={cfg.snapshot_every} steps)")
        model.load_state_dict(torch.load(path, map_location="cpu"))
    report = {"autoencoder": str(autoencoder_run), "prior": str(prior_run), "snapshot": snapshot,
              "held_out": reconstruction_error(model, gs.images[gs.held_out]) if gs.held_out.any() else None,
              **sampler_report(TwoStageSampler(prior, model, refine).eval(), run.root, attribute_export)}
    torch.save(model.state_dict(), run.root / "model.pt")
    (run.root / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    run.close()
    echo(json.dumps(report, indent=2))
    if export_dir is not None:
        # steps=0 exports a committed decoder as it is: its card keeps how that decoder was trained
        trained_as = config_io.to_dict(cfg) if cfg.steps else json.loads((autoencoder_run / "config.json").read_text())
        card = {"training_data": {"root": str(data), "images": int((~gs.held_out).sum())},
                "prior_run": str(prior_run), "decoder_config": trained_as, "metrics": report}
        export_two_stage(prior, model, refine, export_dir, None, card, echo=echo)
    return report
