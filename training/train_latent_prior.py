"""Train stage 2 of the generator: the conditional NVAE over the autoencoder's latent grid.

The loss is NVAE's negative ELBO with the grid as data: the Gaussian NLL of the grid plus the
KL of every latent group, with KL warm-up and balancing, spectral regularisation and the
BatchNorm-scale penalty (the same terms as the single-stage model, `train_generator.nelbo`).
The autoencoder is frozen: its grids are computed once (for each face and its mirror image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from services.shared.conditions import CONDITIONS
from training import config as config_io
from training import loop, losses
from training.models.autoencoder import Autoencoder
from training.models.generator import to_uint8
from training.models.latent_prior import LATENT_PRIOR_PRESETS, LatentPrior, LatentPriorConfig, Refinement
from training.models.prior_growth import grow_state_dict
from training.run_state import RunFolder
from training.train_generator import EMA, ema_weights, init_from


@dataclass(frozen=True)
class LatentPriorTrainConfig:
    model: LatentPriorConfig = field(default_factory=LatentPriorConfig)
    batch_size: int = 32
    steps: int = 7000
    lr: float = 2e-3
    weight_decay: float = 3e-4
    warmup_steps: int = 200
    kl_warmup_fraction: float = 0.3  # the KL coefficient ramps 0 → 1 over this share of training
    kl_balance: bool = True
    spectral_weight: float = 1e-2
    bn_weight: float = 1e-2
    ema_decay: float = 0.999
    flip: bool = True  # mirrored faces are turned the other way: head → 1 − head
    bf16: bool = False  # autocast the forward pass (the NLL, KL and losses stay fp32)
    channels_last: bool = True  # the grids and the prior's weights in NHWC memory order (faster steps on this CPU)
    eval_every: int = 500
    snapshot_every: int = 1000  # EMA weights kept as snapshots/stepNNNNNN.pt (quality against training time); 0 = none
    # condition consistency: grids the prior samples for shuffled batch conditions are drawn by the
    # frozen autoencoder and read by a frozen attribute model; weight × |read − requested| joins the
    # loss (0 = off). The ELBO alone left eyes and mouth unconditioned (a face's eye and mouth
    # cells are a few of the grid's 1024 numbers); the decoder is frozen, so the prior can only
    # move along faces the decoder draws. Judged by an attribute model that is not this one.
    condition_weight: float = 0.0
    condition_temperature: float = 0.8
    condition_batch: int = 16  # prior samples judged per step
    # which conditions the consistency term reads (empty: all five); the ELBO alone conditions
    # hair colour, background and head well, and only eyes and mouth needed the help
    condition_names: tuple[str, ...] = ()
    # anchoring: the same noise and conditions through a frozen copy of the prior this run started
    # from (`anchor_from`, a stage-2 run folder or a compact checkpoint) give the grid the prior drew
    # before; weight × their squared difference joins the loss, everywhere but the eye-and-mouth
    # band, where only the band's mean colour is held. Measured on the shipped run: the consistency
    # term alone moved skin tones (light third 18 % → 1 %) and narrowed the faces drawn for the same
    # conditions; the anchor keeps what the ELBO drew while eyes and mouth follow their conditions.
    anchor_from: str = ""
    anchor_weight: float = 0.0
    # realness: the same decoded prior samples judged by a frozen critic of a `facegen-train critic`
    # run (`realness_from`, its critic_a folder: trained on this generator's faces against real ones);
    # weight × softplus(−patch logit), every region asked to look real, joins the loss (0 = off).
    # The critic takes no part in the benchmark, whose judges stay independent of it.
    realness_from: str = ""
    realness_weight: float = 0.0
    # > 0: the critic keeps learning, real training faces against the prior's decoded samples of
    # each step, at this lr (a GAN on the prior, as SimGAN's critic keeps learning on refined
    # images, so the prior cannot settle on what one frozen critic happens to accept); 0 = frozen
    realness_critic_lr: float = 0.0
    init_from: str = ""  # a run folder (state.pt: weights + EMA) or compact checkpoint this run starts from; fresh optimiser
    # after training: batches of prior samples at this temperature re-estimate the EMA prior's
    # BatchNorm statistics before its samples, fidelity and export (NVAE's readjust_bn; 0 keeps the
    # training statistics); every reader of a trained prior (export, decoder stage, anchor) does it
    readjust_batches: int = 100
    readjust_temperature: float = 0.8
    # how the sampler refines each drawn grid before decoding it (the exported sampler's, and the
    # samples, sweeps and fidelity every stage reports); a reader of the prior takes it from here
    refine: Refinement = field(default_factory=Refinement)
    seed: int = 0
    threads: int = 0


TRAIN_PRESETS = {
    "tiny": LatentPriorTrainConfig(model=LATENT_PRIOR_PRESETS["tiny"], batch_size=8, steps=30, warmup_steps=5,
                                   eval_every=10, ema_decay=0.9),
    "default": LatentPriorTrainConfig(),
    "celeba64": LatentPriorTrainConfig(model=LATENT_PRIOR_PRESETS["celeba64"], batch_size=64, steps=200_000),
}


@torch.no_grad()
def encode_set(autoencoder: Autoencoder, images: np.ndarray, mirrored: bool = True,
               batch: int = 256) -> tuple[torch.Tensor, ...]:
    """(grids of the faces[, grids of their mirror images]), normalised: the prior's data."""
    autoencoder.eval()
    out = []
    for flip in (False, True) if mirrored else (False,):
        grids = []
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i : i + batch])
            grids.append(autoencoder.encode(x.flip(2) if flip else x))
        out.append(torch.cat(grids))
    return tuple(out)


# The band of the aligned face's grid that holds the eyes and the mouth (rows, columns as fractions
# of the grid), at every yaw the data has: anchoring leaves its structure free.
FEATURE_BAND = ((0.38, 0.82), (0.22, 0.78))


def band_mask(size: int) -> torch.Tensor:
    """[size, size] booleans: True inside FEATURE_BAND."""
    (r0, r1), (c0, c1) = FEATURE_BAND
    idx = (torch.arange(size) + 0.5) / size
    rows, cols = (idx >= r0) & (idx < r1), (idx >= c0) & (idx < c1)
    return rows[:, None] & cols[None, :]


def anchor_loss(sampled: torch.Tensor, anchored: torch.Tensor) -> torch.Tensor:
    """Mean squared difference outside the feature band, plus that of the band's mean per channel."""
    band = band_mask(sampled.shape[-1]).to(sampled.device)
    diff = sampled - anchored
    outside = diff.pow(2)[..., ~band].mean()
    inside = diff[..., band].mean(dim=-1).pow(2).mean()
    return outside + inside


@dataclass
class Consistency:
    """The frozen models of the terms on the prior's own samples: the autoencoder that draws them,
    the attribute model that reads them, and optionally the prior to anchor to and the critic."""
    autoencoder: torch.nn.Module
    attributes: torch.nn.Module | None
    anchor: LatentPrior | None = None
    critic: torch.nn.Module | None = None
    real_images: torch.Tensor | None = None  # uint8 NHWC training faces: the online critic's real side

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.autoencoder, self.attributes, self.anchor, self.critic) if m is not None]


def samples_judged(cfg: LatentPriorTrainConfig) -> bool:
    """Whether a step draws prior samples for the condition or the realness term."""
    return cfg.condition_weight > 0 or cfg.realness_weight > 0


def negative_elbo(model: LatentPrior, grid: torch.Tensor, conditions: torch.Tensor, step: int,
                  cfg: LatentPriorTrainConfig, spectral: losses.SpectralRegularizer | None = None,
                  judge: Consistency | None = None) -> dict:
    """{'loss' (minimised, per dimension), 'nelbo' [N] (nats), 'kl_groups' [G], 'drift', 'anchor', 'realness'}.
    `judge`: the frozen models of the terms on the prior's samples."""
    net = getattr(model, "module", model)
    consistency = judge is not None and samples_judged(cfg)
    with torch.autocast(grid.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        if consistency:
            k = min(cfg.condition_batch, len(conditions))
            wanted = conditions[torch.randperm(len(conditions), device=grid.device)[:k]]
            noise = [torch.randn(k, *s, device=grid.device) for s in net.group_shapes]
            nll, kls, sampled = model(grid, conditions, wanted, noise, cfg.condition_temperature)
        else:
            nll, kls = model(grid, conditions)
    nll = nll.float()
    kl_all = torch.stack(kls, dim=1).float()  # [N, G]
    kl_weighted, _, _ = losses.nvae_kl(kl_all, step, int(cfg.kl_warmup_fraction * cfg.steps), cfg.kl_balance,
                                       net.hier.group_areas, net.hier.groups_per_scale)
    penalty = losses.nvae_regularisers(net, spectral, cfg.spectral_weight, cfg.bn_weight)
    dims = float(np.prod(grid.shape[1:]))
    loss = ((nll + kl_weighted).mean() + penalty) / dims
    drift = anchor = realness = torch.zeros((), device=grid.device)
    if consistency:
        decoded = judge.autoencoder.decode(sampled.float())
        if judge.attributes is not None and cfg.condition_weight > 0:
            drift = losses.condition_drift(judge.attributes, decoded, wanted, cfg.condition_names)
            loss = loss + cfg.condition_weight * drift
        if judge.critic is not None and cfg.realness_weight > 0:
            realness = losses.unrealness(judge.critic, decoded)
            loss = loss + cfg.realness_weight * realness
        if judge.anchor is not None and cfg.anchor_weight > 0:
            with torch.no_grad():
                anchored = judge.anchor.sample(wanted, noise, cfg.condition_temperature)
            anchor = anchor_loss(sampled.float(), anchored.float())
            loss = loss + cfg.anchor_weight * anchor
    return {"loss": loss, "nelbo": (nll + kl_all.sum(1)).detach(), "kl_groups": kl_all.detach().mean(0),
            "drift": drift.detach(), "anchor": anchor.detach(), "realness": realness.detach(),
            "decoded": decoded.detach() if consistency else None}


class OnlineCritic:
    """The realness critic learning on: after each update of the prior, one critic update on as
    many real training faces as the step decoded prior samples (uint8-rounded, as the critic
    stage shows it generated faces). Saved with the run, so a resumed run resumes the critic too."""

    def __init__(self, critic: torch.nn.Module, real_images: torch.Tensor, lr: float, seed: int) -> None:
        self.critic, self.real = critic, real_images
        self.opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.999))
        self.gen = torch.Generator().manual_seed(seed + 29)
        self.decoded: torch.Tensor | None = None  # the last step's samples, NCHW in [-1, 1]

    def update(self) -> float | None:
        from training.train_critic import critic_loss, flip_half

        if self.decoded is None:
            return None
        fake = to_uint8(self.decoded)
        real = flip_half(self.real[torch.randint(len(self.real), (len(fake),), generator=self.gen)], self.gen)
        self.critic.train().requires_grad_(True)
        loss = critic_loss(self.critic, (real.to(fake.device), fake))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.critic.eval().requires_grad_(False)
        self.decoded = None
        return float(loss.detach())

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "opt": self.opt.state_dict(), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])


def init_prior(source: str, model: LatentPrior, ema: EMA) -> None:
    """`init_from` for the prior; a prior whose config differs from `source`'s (more finest-scale
    groups, the only difference `prior_growth` accepts) starts as `source` grown, from its EMA weights."""
    if config_io.load(LatentPriorTrainConfig, Path(source) / "config.json").model == model.cfg:
        init_from(source, model, ema)
        return
    grown = grow_state_dict(ema_weights(source), model)
    model.load_state_dict(grown)
    ema.shadow.load_state_dict(grown)


def train(grids: tuple[torch.Tensor, torch.Tensor], conditions: np.ndarray, cfg: LatentPriorTrainConfig,
          run: RunFolder, progress=None, judge: Consistency | None = None,
          ) -> tuple[LatentPrior, EMA]:
    """grids: (faces, mirrored faces) [N, C, S, S] from `encode_set`; conditions float [N, 5];
    `judge`: the frozen models of the terms on the prior's samples, when cfg.condition_weight or
    cfg.realness_weight > 0."""
    if cfg.condition_weight > 0 and (judge is None or judge.attributes is None):
        raise ValueError("condition_weight > 0 needs the trained attribute model (--attributes-run)")
    if cfg.realness_weight > 0 and (judge is None or judge.critic is None):
        raise ValueError("realness_weight > 0 needs a critic (realness_from: a critic run's critic_a folder)")
    online = None
    if cfg.realness_weight > 0 and cfg.realness_critic_lr > 0:
        if judge.real_images is None or not len(judge.real_images):
            raise ValueError("realness_critic_lr > 0 needs the real training faces the critic learns on")
        online = OnlineCritic(judge.critic, judge.real_images, cfg.realness_critic_lr, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = LatentPrior(cfg.model)
    ema = EMA(model, cfg.ema_decay)
    if cfg.init_from and not run.state_path.exists():
        init_prior(cfg.init_from, model, ema)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    for m in judge.modules() if judge else ():
        m.eval().requires_grad_(False)
    spectral = losses.SpectralRegularizer(model)
    plain, mirrored = grids
    c_all = torch.from_numpy(conditions.astype(np.float32))
    head = CONDITIONS.index("head")

    def make_batch(step: int, gen: torch.Generator):
        idx = torch.randint(len(plain), (cfg.batch_size,), generator=gen)
        g, c = plain[idx], c_all[idx].clone()
        if cfg.flip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            g = torch.where(flip[:, None, None, None], mirrored[idx], g)
            c[flip, head] = 1.0 - c[flip, head]
        return g.contiguous(memory_format=fmt), c, step

    def loss_fn(m: LatentPrior, batch) -> torch.Tensor:
        g, c, step = batch
        if judge is not None:
            for j in judge.modules():
                j.to(g.device)  # a no-op after the first step
        terms = negative_elbo(m, g, c, step, cfg, spectral, judge)
        if online is not None:
            online.decoded = terms["decoded"]
        return terms["loss"]

    loop_cfg = loop.LoopConfig.of(cfg)
    def on_step(step: int) -> None:
        ema.update(model)
        critic_loss = online.update() if online is not None else None
        lead = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        if lead and critic_loss is not None and step % 50 == 0:
            run.log(step, critic_loss=critic_loss)
        if lead and cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0:
            run.save_snapshot(step + 1, ema.shadow)

    loop.fit(model, loop_cfg, run, make_batch, loss_fn, progress=progress, on_step=on_step,
             extra_state={"ema": ema, "spectral": spectral, **({"online_critic": online} if online else {})},
             distributed=True)
    return model.cpu(), ema.cpu()


@torch.no_grad()
def held_out(model: LatentPrior, grids: torch.Tensor, conditions: np.ndarray, batch: int = 128) -> dict:
    """Negative ELBO of held-out grids in nats per grid dimension, mean KL per group, active groups."""
    model.eval()
    total, kl_sum, n = 0.0, None, 0
    for i in range(0, len(grids), batch):
        g, c = grids[i : i + batch], torch.from_numpy(conditions[i : i + batch].astype(np.float32))
        nll, kls = model(g, c)
        k = torch.stack(kls, 1)
        total += float((nll + k.sum(1)).sum())
        kl_sum = k.sum(0) if kl_sum is None else kl_sum + k.sum(0)
        n += len(g)
    kl = (kl_sum / max(n, 1)).tolist() if kl_sum is not None else []
    dims = int(np.prod(grids.shape[1:]))
    return {"nats_per_dim": total / max(n, 1) / dims, "kl_per_group": kl, "active_groups": sum(k > 0.1 for k in kl),
            "groups": len(kl), "n": n}


SAMPLING_TWO_STAGE = ("z_g = mu_p + temperature * sigma_p * noise_g over the latent grid's hierarchy; "
                      "grid = the prior's Gaussian mean, refined (card: refinement); "
                      "image = the autoencoder's decoder(grid)")


def encoder_spec(sampler, image_size: int, version: str = "1"):
    """The encoder graph: uint8 RGB NHWC faces + their conditions in; per latent group the noise
    that redraws them through the sampler at temperature 1 (posterior means) out."""
    from training.export import ExportSpec, TensorSpec

    shapes = sampler.group_shapes

    def make_inputs(batch: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(77 + batch)
        return {"images": rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8),
                "conditions": rng.random((batch, len(CONDITIONS)), dtype=np.float32)}

    return ExportSpec(
        model="encoder",
        version=version,
        inputs=(TensorSpec("images", "uint8", ("batch", image_size, image_size, 3), (0, 255), "RGB faces, NHWC"),
                TensorSpec("conditions", "float32", ("batch", len(CONDITIONS)), (0.0, 1.0),
                           "the faces' conditions (as the attributes service measures them)")),
        outputs=tuple(TensorSpec(f"noise_{g}", "float32", ("batch", *shape), None,
                                 "the sampler's noise_g that redraws this face at temperature 1")
                      for g, shape in enumerate(shapes)),
        make_inputs=make_inputs,
        atol=1e-3,
        extra={"image": {"height": image_size, "width": image_size, "channels": "RGB", "layout": "NHWC",
                         "dtype": "uint8"},
               "conditions": list(CONDITIONS),
               "latent_groups": [list(sh) for sh in shapes],
               "use": "feed noise_g to exports/generator with new conditions and temperature 1 to edit the face"},
    )
