"""Train the generator (conditional NVAE) on images and their conditions.

The loss is the negative ELBO: the discretized-logistic-mixture reconstruction term plus the KL
of every latent group, with NVAE's KL warm-up and balancing, spectral regularisation and the
BatchNorm-scale penalty. An exponential moving average of the weights is kept for export.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from services.shared.conditions import CONDITIONS
from training import loop, losses
from training.models.generator import GENERATOR_PRESETS, AttributeGenerator, GeneratorConfig
from training.models.layers import as_faces
from training.run_state import RunFolder


@dataclass(frozen=True)
class GeneratorTrainConfig:
    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    batch_size: int = 16
    steps: int = 20_000
    lr: float = 1e-2 * 0.3  # NVAE uses Adamax at 1e-2; AdamW here, a little lower
    weight_decay: float = 3e-4
    warmup_steps: int = 200  # learning-rate warm-up
    kl_warmup_fraction: float = 0.3  # the KL coefficient ramps 0 → 1 over this share of training
    kl_balance: bool = True
    spectral_weight: float = 1e-2  # λ of the spectral regulariser (NVAE ramps it with the KL; fixed here)
    bn_weight: float = 1e-2
    ema_decay: float = 0.999
    flip: bool = True  # mirrored faces are turned the other way: head → 1 − head
    eval_every: int = 500
    seed: int = 0
    threads: int = 0
    # condition consistency: prior samples for shuffled batch conditions are measured by the frozen
    # attribute model, and |measured − requested| is added to the loss with this weight (0 = off).
    # The ELBO alone let the decoder ignore small details: eyes and mouth stayed at chance.
    condition_weight: float = 0.0
    condition_temperature: float = 0.8
    # each judged sample is first moved by up to this many pixels and rescaled by up to ±2·shift %
    # (bilinear, per sample), meant with several judges (--attributes-run twice) to make a pixel
    # pattern that pleases one fixed judge pay less. Measured (README): it did not stop the bright
    # eye band — every judge trained on sharp faces reads it as open eyes. 0 = judged as drawn.
    condition_shift: float = 0.0
    # detail emphasis: the reconstruction term weighs each pixel of a training image by how much
    # the frozen attribute model's eye and mouth readings depend on it there (|∂/∂x| on the real
    # image, blurred, scaled to [0, 1]): w = 1 + detail_weight · saliency, renormalised to mean 1,
    # so the balance between reconstruction and KL stays. The unweighted ELBO let the decoder
    # leave eyes and mouth out of even its reconstructions (judged .22 / .30 MAE). The weights
    # come from real pixels and target real pixels, so — unlike condition_weight — there is no
    # judge for the decoder to fool. 0 = the plain ELBO. Bits/dim always use the unweighted term.
    detail_weight: float = 0.0
    init_from: str = ""  # a run folder whose state.pt (weights + EMA) this run starts from; fresh optimiser

    @property
    def needs_judges(self) -> bool:
        """Whether training needs the frozen attribute model(s) (--attributes-run)."""
        return self.condition_weight > 0 or self.detail_weight > 0


TRAIN_PRESETS = {
    "tiny": GeneratorTrainConfig(model=GENERATOR_PRESETS["tiny"], batch_size=8, steps=30, warmup_steps=5, eval_every=10,
                                 lr=3e-3, ema_decay=0.9),
    "default": GeneratorTrainConfig(),
    "celeba64": GeneratorTrainConfig(model=GENERATOR_PRESETS["celeba64"], batch_size=32, steps=200_000),
}


@dataclass
class NelboTerms:
    loss: torch.Tensor  # what is minimised (KL weighted by warm-up/balancing, plus regularisers)
    nelbo: torch.Tensor  # the true negative ELBO per image (nats), for bits/dim
    recon: torch.Tensor
    kl_groups: torch.Tensor  # [G] mean KL per group (nats)
    kl_coeffs: torch.Tensor  # [G]
    beta: float
    condition_drift: torch.Tensor | None = None  # mean |measured − requested| of prior samples


Judges = torch.nn.Module | Sequence[torch.nn.Module] | None


def as_judges(attributes: Judges) -> list[torch.nn.Module]:
    """The frozen attribute models of the consistency and detail terms: none, one or several."""
    if attributes is None:
        return []
    return [attributes] if isinstance(attributes, torch.nn.Module) else list(attributes)


def jitter(images: torch.Tensor, shift: float) -> torch.Tensor:
    """NCHW images moved by up to `shift` pixels and scaled by up to ±2·shift % each (border pixels
    repeat); differentiable, random from torch's global generator."""
    if shift <= 0:
        return images
    n, _, h, w = images.shape
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    scale = 1.0 + (torch.rand(n, device=images.device) * 2 - 1) * 0.02 * shift
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    # affine_grid works in [-1, 1]: one pixel is 2 / size
    theta[:, 0, 2] = (torch.rand(n, device=images.device) * 2 - 1) * shift * 2.0 / w
    theta[:, 1, 2] = (torch.rand(n, device=images.device) * 2 - 1) * shift * 2.0 / h
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def detail_weights(images: torch.Tensor, judges: list[torch.nn.Module], weight: float) -> torch.Tensor:
    """Per-pixel weights [N, H, W] (mean 1 per image) for NHWC uint8 `images`: 1 + weight · the
    judges' eye + mouth saliency. Needs no gradient from the caller; none flows back."""
    parts = [CONDITIONS.index("eyes"), CONDITIONS.index("mouth")]
    x = images.float().requires_grad_(True)
    with torch.enable_grad():
        read = torch.stack([judge(x)[:, parts].sum() for judge in judges]).sum()
        (grad,) = torch.autograd.grad(read, x)
    sal = grad.abs().sum(dim=3, keepdim=True).permute(0, 3, 1, 2)  # [N, 1, H, W]
    # spread over the feature's neighbourhood: gradients are speckled, an eye is a few pixels wide
    sal = F.avg_pool2d(sal, 5, stride=1, padding=2, count_include_pad=False)[:, 0]
    sal = sal / sal.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
    w = 1.0 + weight * sal
    return (w / w.flatten(1).mean(dim=1)[:, None, None]).detach()


def nelbo(model: AttributeGenerator, images: torch.Tensor, conditions: torch.Tensor, step: int,
          cfg: GeneratorTrainConfig, spectral: losses.SpectralRegularizer | None = None,
          attributes: Judges = None) -> NelboTerms:
    net = getattr(model, "module", model)  # the network itself, for its config
    judges = as_judges(attributes)
    consistency = bool(judges) and cfg.condition_weight > 0
    if consistency:
        # shuffled conditions keep real combinations; the noise comes from torch's global generator
        wanted = conditions[torch.randperm(len(conditions), device=conditions.device)]
        noise = [torch.randn(len(conditions), *s, device=conditions.device) for s in net.group_shapes]
        params, kls, prior_images = model(images, conditions, wanted, noise, cfg.condition_temperature)
    else:
        params, kls = model(images, conditions)  # through forward: a DDP wrapper syncs its gradients
    model = net
    x = images.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
    recon_px = losses.dmol_nll(x, params, model.cfg.mixtures, per_pixel=True)  # [N, H, W]
    recon = recon_px.flatten(1).sum(dim=1)
    if judges and cfg.detail_weight > 0:
        recon_fit = (recon_px * detail_weights(images, judges, cfg.detail_weight)).flatten(1).sum(dim=1)
    else:
        recon_fit = recon
    kl_all = torch.stack(kls, dim=1)  # [N, G]
    kl_weighted, coeffs, beta = losses.nvae_kl(kl_all, step, int(cfg.kl_warmup_fraction * cfg.steps), cfg.kl_balance,
                                               model.group_areas, model.hier.groups_per_scale)
    dims = float(np.prod(images.shape[1:]))
    # NVAE weighs its regularisers against the per-image NELBO; this loss is per dimension, so
    # their weights are divided by the number of dimensions as well
    penalty = losses.nvae_regularisers(model, spectral, cfg.spectral_weight, cfg.bn_weight)
    loss = ((recon_fit + kl_weighted).mean() + penalty) / dims
    drift = torch.zeros((), device=images.device)
    if consistency:
        judged = as_faces(jitter(prior_images, cfg.condition_shift))
        drift = torch.stack([(judge(judged) - wanted).abs().mean() for judge in judges]).mean()
        loss = loss + cfg.condition_weight * drift
    return NelboTerms(loss, (recon + kl_all.sum(1)).detach(), recon.detach(), kl_all.detach().mean(0), coeffs, beta,
                      drift.detach())


class EMA(torch.nn.Module):
    """Exponential moving average of a model's weights (the copy that gets exported)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for e, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1.0 - self.decay)
        for e, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def ema_weights(run_dir) -> dict[str, torch.Tensor]:
    """A run's EMA weights in fp32: from a run folder's state.pt, or from a compact checkpoint
    folder's ema_fp16.pt (training/checkpoints/). FileNotFoundError when it has neither."""
    from pathlib import Path

    root = Path(run_dir)
    if (root / "state.pt").exists():
        ema = torch.load(root / "state.pt", map_location="cpu", weights_only=False)["ema"]
        return {k.removeprefix("shadow."): v for k, v in ema.items()}
    if (root / "ema_fp16.pt").exists():
        return {k: v.float() for k, v in torch.load(root / "ema_fp16.pt", map_location="cpu").items()}
    raise FileNotFoundError(f"{root}/state.pt not found")


def init_from(run_dir: str, model: torch.nn.Module, ema: EMA) -> None:
    """Start a run from another run folder's weights and EMA (its state.pt), or from a compact
    checkpoint folder's EMA weights (ema_fp16.pt, training/checkpoints/); the optimiser starts fresh."""
    from pathlib import Path

    root = Path(run_dir)
    if not (root / "state.pt").exists():
        sd = ema_weights(root)
        model.load_state_dict(sd)
        ema.shadow.load_state_dict(sd)
        return
    payload = torch.load(root / "state.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"])
    ema.load_state_dict(payload["ema"])


def train(images: np.ndarray, conditions: np.ndarray, cfg: GeneratorTrainConfig, run: RunFolder,
          progress=None, attributes: Judges = None) -> tuple[AttributeGenerator, EMA]:
    """Images uint8 [N, 64, 64, 3] with conditions float [N, 5]; resumes from run/state.pt.
    `attributes` (one or several frozen models, NHWC [0, 255] → conditions; their errors and
    saliencies are combined) is needed when cfg.condition_weight > 0 or cfg.detail_weight > 0."""
    judges = as_judges(attributes)
    if cfg.needs_judges and not judges:
        raise ValueError("condition_weight > 0 or detail_weight > 0 needs the attribute model (--attributes-run)")
    torch.manual_seed(cfg.seed)
    model = AttributeGenerator(cfg.model)
    ema = EMA(model, cfg.ema_decay)
    if cfg.init_from and not run.state_path.exists():
        init_from(cfg.init_from, model, ema)
    for judge in judges:
        judge.eval().requires_grad_(False)
    spectral = losses.SpectralRegularizer(model)
    x_all, c_all = torch.from_numpy(images), torch.from_numpy(conditions.astype(np.float32))
    head = CONDITIONS.index("head")

    def make_batch(step: int, gen: torch.Generator):
        idx = torch.randint(len(x_all), (cfg.batch_size,), generator=gen)
        x, c = x_all[idx], c_all[idx].clone()
        if cfg.flip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(2), x)
            c[flip, head] = 1.0 - c[flip, head]
        return x, c, step

    def loss_fn(m: AttributeGenerator, batch) -> torch.Tensor:
        x, c, step = batch
        for judge in judges:
            judge.to(x.device)  # a no-op after the first step
        return nelbo(m, x, c, step, cfg, spectral, judges).loss

    def on_step(step: int) -> None:
        ema.update(model)
        if (step + 1) % cfg.eval_every == 0:  # a sample grid every eval_every steps, from the EMA weights
            from training.eval_generator import grid, noise_for

            rng = np.random.default_rng(cfg.seed)
            dev = next(ema.shadow.parameters()).device
            cond = torch.from_numpy(rng.random((8, model.cfg.n_conditions), dtype=np.float32)).to(dev)
            noise = [z.to(dev) for z in noise_for(ema.shadow, 8, cfg.seed)]
            with torch.no_grad():
                faces = ema.shadow.eval().sample(cond, noise, 0.8).cpu().numpy()
            (run.root / "grids").mkdir(exist_ok=True)
            grid(faces, 8).save(run.root / "grids" / f"step{step + 1:06d}.png")

    loop_cfg = loop.LoopConfig.of(cfg)
    loop.fit(model, loop_cfg, run, make_batch, loss_fn, progress=progress, on_step=on_step,
             extra_state={"ema": ema, "spectral": spectral}, distributed=True)
    model.cpu()
    ema.cpu()
    return model, ema


@torch.no_grad()
def readjust_bn(model: AttributeGenerator, temperature: float, batches: int = 100, batch_size: int = 64,
                seed: int = 0) -> AttributeGenerator:
    """NVAE's BatchNorm re-estimation: the decoder's running statistics are recomputed from prior
    samples at `temperature` (uniform random conditions), in place; returns the model in eval mode.

    The EMA weights come with the training model's running statistics, which belong to other
    weights and to posterior, not prior, samples: on the shipped run the mismatch cost the EMA
    1 bit/dim of reconstruction and much of its condition fidelity. Only the layers sampling
    uses are touched (the encoder does not run)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, {k: v.clone() for k, v in m.named_buffers()}) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch, not an exponential one
    gen = torch.Generator().manual_seed(seed)
    model.train()
    try:
        for _ in range(batches):
            cond = torch.rand(batch_size, model.cfg.n_conditions, generator=gen)
            noise = [torch.randn(batch_size, *s, generator=gen) for s in model.group_shapes]
            model.sample(cond, noise, temperature)
    finally:
        for m, (momentum, buffers) in zip(bns, saved, strict=True):
            m.momentum = momentum
            if not batches or m.num_batches_tracked == 0:  # sampling never ran it (the encoder): as it was
                for k, v in buffers.items():
                    getattr(m, k).copy_(v)
        model.eval()
    return model


SAMPLING_PIXEL = "z_g = mu_p + temperature * sigma_p * noise_g; image = mean of the logistic mixture"


def export_spec(model, version: str = "1", image_size: int | None = None, sampling: str = SAMPLING_PIXEL,
                name: str = "generator"):
    """The sampler graph: conditions, temperature and one explicit noise tensor per latent group
    in, uint8 RGB NHWC images out — the same inputs give the same faces on every runtime.
    `model` is any sampler with `group_shapes` (the single-stage model, or the two-stage one
    with its `image_size` given)."""
    from services.shared.conditions import CONDITIONS
    from training.export import ExportSpec, TensorSpec

    shapes = model.group_shapes
    s = image_size or model.cfg.image_size

    def make_inputs(batch: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(99 + batch)
        feeds = {"conditions": rng.random((batch, len(CONDITIONS)), dtype=np.float32),
                 "temperature": np.array(0.8, np.float32)}
        for g, shape in enumerate(shapes):
            feeds[f"noise_{g}"] = rng.standard_normal((batch, *shape), dtype=np.float32)
        return feeds

    inputs = (
        TensorSpec("conditions", "float32", ("batch", len(CONDITIONS)), (0.0, 1.0), "the five conditions"),
        TensorSpec("temperature", "float32", (), (0.0, 2.0), "scales every group's prior standard deviation"),
        *(TensorSpec(f"noise_{g}", "float32", ("batch", *shape), None, "standard normal noise of latent group g")
          for g, shape in enumerate(shapes)),
    )
    return ExportSpec(
        model=name,
        version=version,
        inputs=inputs,
        outputs=(TensorSpec("images", "uint8", ("batch", s, s, 3), (0, 255), "RGB faces, NHWC"),),
        make_inputs=make_inputs,
        atol=1.0,  # uint8 output: a rounding boundary may flip by one level
        varargs_from=2,  # Sampler.forward(conditions, temperature, *noise)
        extra={
            "image": {"height": s, "width": s, "channels": "RGB", "layout": "NHWC", "dtype": "uint8"},
            "conditions": list(CONDITIONS),
            "latent_groups": [list(sh) for sh in shapes],
            "sampling": sampling,
        },
    )
