"""The two-stage generator's pieces that several stages share (the prior's and the decoder's
training, the critic's retouch): reading a trained autoencoder or prior back, exporting the
sampler and the encoder, and the report of a finished sampler. No command-line code here."""

from __future__ import annotations

from pathlib import Path

from training.stages import MissingRun


def load_autoencoder(run_dir: Path):
    """The trained autoencoder (EMA weights and latent scale) of `facegen-train autoencoder`."""
    import torch

    from training import config as config_io
    from training.models.autoencoder import Autoencoder
    from training.train_autoencoder import AutoencoderTrainConfig

    if not (run_dir / "model.pt").exists():
        raise MissingRun(f"{run_dir}/model.pt not found: train stage 1 first "
                         f"(`facegen-train autoencoder --data DIR --out {run_dir}`)")
    cfg = config_io.load(AutoencoderTrainConfig, run_dir / "config.json")
    model = Autoencoder(cfg.model)
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location="cpu"))
    return model.eval().requires_grad_(False)


def load_prior(run_dir: Path, seed: int = 0):
    """A trained stage-2 run's EMA prior (its state.pt, or a compact checkpoint's ema_fp16.pt),
    BatchNorm re-estimated as its config says (as the export did)."""
    from training import config as config_io
    from training.models.latent_prior import LatentPrior
    from training.train_generator import ema_weights, readjust_bn
    from training.train_latent_prior import LatentPriorTrainConfig

    try:
        weights = ema_weights(run_dir)
    except FileNotFoundError as exc:
        raise MissingRun(f"{exc}: train stage 2 first (`facegen-train generator`)") from None
    cfg = config_io.load(LatentPriorTrainConfig, run_dir / "config.json")
    prior = LatentPrior(cfg.model)
    prior.load_state_dict(weights)
    if cfg.readjust_batches:
        readjust_bn(prior, cfg.readjust_temperature, cfg.readjust_batches, seed=seed)
    return prior.eval().requires_grad_(False)


def refinement(run_dir: Path):
    """How a trained stage-2 run's prior wants its grids refined before decoding (its config's
    `refine`; checkpoints written before the setting existed get the default)."""
    from training import config as config_io
    from training.train_latent_prior import LatentPriorTrainConfig

    return config_io.load(LatentPriorTrainConfig, run_dir / "config.json").refine


def export_two_stage(prior, autoencoder, refine, export_dir: Path, encoder_dir: Path | None, card: dict,
                     echo=print) -> None:
    """Export the sampler (prior + `refine` (a Refinement) + decoder) to `export_dir`, and beside it
    the two graphs an edit runs: the encoder (default: exports/encoder/<same version> for
    exports/generator/<version>, else <export_dir>_encoder) and the redraw, the sampler without the
    refinement (exports/redraw/<version>, else <export_dir>_redraw). An edit redraws a face the
    encoder read, whose grid already lies where the refinement would take a drawn one: refining it
    again only moves the face away from itself, and multiplies the edit's cost."""
    import dataclasses

    from services.shared.exports import beside
    from training.export import export_model
    from training.models.latent_prior import Encoder, Refinement, TwoStageSampler
    from training.train_generator import export_spec
    from training.train_latent_prior import SAMPLING_TWO_STAGE, encoder_spec

    size = autoencoder.cfg.image_size
    card = {"design": "two-stage: autoencoder + conditional NVAE prior over its latent grid",
            "refinement": dataclasses.asdict(refine), **card}
    sampler = TwoStageSampler(prior, autoencoder, refine).eval()
    spec = export_spec(sampler, version=export_dir.name, image_size=size, sampling=SAMPLING_TWO_STAGE)
    written = export_model(sampler, spec, export_dir, card)
    echo(f"exported the sampler to {export_dir} ({written['onnx_bytes'] / 1e6:.2f} MB)")
    encoder_dir = encoder_dir or beside(export_dir, "encoder")
    written = export_model(Encoder(prior, autoencoder).eval(), encoder_spec(sampler, size, encoder_dir.name),
                           encoder_dir, {**card, "sampler": str(export_dir)})
    echo(f"exported the encoder to {encoder_dir} ({written['onnx_bytes'] / 1e6:.2f} MB)")
    redraw_dir, unrefined = beside(export_dir, "redraw"), Refinement(passes=0)
    redraw = TwoStageSampler(prior, autoencoder, unrefined).eval()
    written = export_model(redraw, export_spec(redraw, redraw_dir.name, size, SAMPLING_TWO_STAGE, name="redraw"),
                           redraw_dir, {**card, "refinement": dataclasses.asdict(unrefined), "sampler": str(export_dir),
                                        "which": "the sampler without its refinement, for edits"})
    echo(f"exported the edits' redraw to {redraw_dir} ({written['onnx_bytes'] / 1e6:.2f} MB)")


def sampler_report(sampler, root: Path, attribute_export: Path | None) -> dict:
    """What every stage that ends in a two-stage sampler reports: its sample and sweep grids
    (written in `root`), and its condition fidelity by the exported attribute model, if any."""
    from training.eval_generator import condition_fidelity, sample_grids

    report = {"grids": [str(p) for p in sample_grids(sampler, root)]}
    if attribute_export is not None and attribute_export.exists():
        report["condition_fidelity"] = condition_fidelity(sampler, attribute_export)
    return report
