"""Train the critic (real vs generated, per region) and the refiner that retouches what it flags.

Three stages, each in its own run subfolder (resumable like every run):
1. `critic_a`: the critic the refiner trains against, on real images of split A vs fresh samples
   of the exported generator;
2. `refiner`: SimGAN (Shrivastava et al. 2017, Alg. 1): the refiner minimises adversarial +
   self-regularisation + condition-consistency losses while critic A keeps learning on real vs
   refined images, half of them from a history buffer of earlier refinements (§2.3);
3. `critic_b`: an independent critic (other seed, real split B, other generator seeds) that never
   sees the refiner. The evaluation judges retouches with it, and it is the critic that ships, so
   the realness the service reports before/after a retouch comes from a judge the refiner never fooled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from services.shared.sampling import around_default
from training import config as config_io
from training import loop
from training.losses import patch_bce, refiner_losses
from training.models.critic import CRITIC_PRESETS, Critic, CriticConfig
from training.models.latent_denoiser import LatentDenoiserConfig
from training.models.refiner import REFINER_PRESETS, ProjectionConfig, ProjectionRetouch, Refiner, RefinerConfig
from training.run_state import RunFolder
from training.train_latent_denoiser import DenoiserTrainConfig


@dataclass(frozen=True)
class CriticTrainConfig:
    critic: CriticConfig = field(default_factory=CriticConfig)
    # how the retouch is made: "projection" (critic A's map gates the generator's own autoencoder
    # projection, models/refiner.py ProjectionRetouch) or "simgan" (a residual refiner trained
    # against critic A: the first wave's, whose losses allow only changes nobody sees)
    retouch: str = "projection"
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    # the projection's latent denoiser, distilled from the generator's prior (train_latent_denoiser)
    denoiser: DenoiserTrainConfig = field(default_factory=DenoiserTrainConfig)
    # the projection's flag_below is calibrated on real faces critic A never saw (split B): the
    # largest whose retouch changes them by at most this much on average (0..255 units)
    real_change_max: float = 0.8
    # … and whose change on generated faces critic A never saw (critic B's) falls at least this much
    # inside the regions A's map calls generated: the retouch repairs what the map points at. The
    # goal (0.7) holds on faces the calibration never saw, where the share lands a point or so away
    # from its value on these 500: hence the margin
    flagged_share_min: float = 0.72
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    batch_size: int = 64  # critic batches: half real, half generated
    # region supervision, so the map points at what is wrong rather than at "generated" everywhere:
    # each batch also holds real faces with one box made wrong — a generated face's region pasted
    # in (CutMix, as U-Net GAN does), or the box smeared or noised — whose target map is real
    # outside the box and generated inside; this weighs that term (0 = whole-image labels only)
    region_weight: float = 3.0
    region_box: tuple[int, int] = (12, 28)  # side of the box, pixels (min, max)
    critic_steps: int = 2000
    critic_lr: float = 5e-4
    refiner_batch_size: int = 16
    refiner_steps: int = 600
    refiner_lr: float = 2e-4
    critic_lr_while_refining: float = 1e-4  # critic A keeps learning on refined images
    # weight of mean |refined − input| (0..1 units). The refiner freezes at the identity when it is
    # too strong for the generator at hand: 30 / 100 (with condition_weight) worked on the first
    # generator, 15 / 50 on the fine-tuned one; the BN-re-estimated one froze at 15 / 50, and 7.5 / 25
    # retouch within the goals there and on the shipped (longer-trained) one
    self_regularisation: float = 7.5
    condition_weight: float = 25.0  # weight of the condition drift measured by the attribute model
    # weight of the change beyond large_change_above/255 per channel: with L1 alone (weights 20–30)
    # over half the pixels moved by more than 8/255; stronger L1 (60+) froze the refiner at identity
    large_change_weight: float = 1000.0
    large_change_above: float = 6.0
    history_size: int = 1024  # earlier refinements the critic keeps seeing (SimGAN §2.3)
    generated: int = 4000  # fresh generator samples per critic
    # the fakes are drawn around the temperature users get when they leave it out
    temperatures: tuple[float, ...] = around_default(-0.2, 0.0, 0.2)
    val_fraction: float = 0.1  # real images held out (by file-name hash) for the evaluation
    eval_faces: int = 512  # held-out generated faces the retouch is evaluated on
    eval_every: int = 200
    seed: int = 0
    independent_seed: int = 1  # critic B
    threads: int = 0


TRAIN_PRESETS = {
    "tiny": CriticTrainConfig(critic=CRITIC_PRESETS["tiny"], refiner=REFINER_PRESETS["tiny"], batch_size=32,
                              critic_steps=80, refiner_batch_size=8, refiner_steps=20, history_size=64,
                              generated=256, eval_faces=64, eval_every=40,
                              denoiser=DenoiserTrainConfig(model=LatentDenoiserConfig(width=8, blocks=1), passes=1, faces=64,
                                                           batch_size=16, steps=20, eval_every=10)),
    # no spectral normalisation: it kept the critic smooth for the SimGAN refiner's adversarial loop,
    # and capped it as a judge (AUC 0.86 → 0.98 without, on the v2.1 generator's faces, and only
    # without did the map learn to flag smeared and noised regions); `--set critic.spectral_norm=true`
    # for retouch=simgan
    # no latent denoiser: the v2.9 sampler already projects every grid by the prior, which is what the
    # denoiser was distilled from (`--set denoiser.passes=8` brings it back; tests/perf/RESULTS.md)
    "default": CriticTrainConfig(critic=CriticConfig(spectral_norm=False), denoiser=DenoiserTrainConfig(passes=0)),
}


def flip_half(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of a NHWC batch (both classes alike, so mirroring is no cue)."""
    flip = torch.rand(images.shape[0], generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(2), images)


def critic_loss(critic: Critic, batch, region_weight: float = 0.0) -> torch.Tensor:
    real, fake, *mixed = batch
    loss = patch_bce(critic.patch_logits(real), True) + patch_bce(critic.patch_logits(fake), False)
    if mixed and region_weight:
        images, target = mixed
        loss = loss + region_weight * patch_bce(critic.patch_logits(images), target)
    return loss


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of float NHWC images (separable, reflect padding)."""
    r = max(1, int(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).repeat(3, 1, 1, 1)  # [3, 1, 1, 2r+1]
    x = images.permute(0, 3, 1, 2)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=3)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.transpose(2, 3), groups=3)
    return x.permute(0, 2, 3, 1)


def wrong_regions(real: torch.Tensor, fake: torch.Tensor, map_size: int, box: tuple[int, int],
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Real uint8 NHWC faces with one box each made wrong (a third each: a generated face's region
    pasted in, smeared, noised), and their target maps [N, R, R]: the share of each region that
    is still the real face."""
    n, size = real.shape[0], real.shape[1]
    x = real.float()
    side = torch.randint(box[0], box[1] + 1, (n,), generator=gen)
    top = (torch.rand(n, generator=gen) * (size - side)).long()
    left = (torch.rand(n, generator=gen) * (size - side)).long()
    rows, cols = torch.arange(size)[None, :, None], torch.arange(size)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + side)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + side)[:, None, None])).float()[..., None]
    kind = torch.arange(n) % 3
    noise = torch.randn(x.shape, generator=gen) * 30.0
    wrong = torch.where((kind == 0)[:, None, None, None], fake.float(),
                        torch.where((kind == 1)[:, None, None, None], _blur(x, 2.5), x + noise))
    mixed = torch.round(x + inside * (wrong - x)).clamp(0, 255).to(torch.uint8)
    cell = size // map_size
    target = 1.0 - F.avg_pool2d(inside.permute(0, 3, 1, 2), cell)[:, 0]
    return mixed, target


def load_critic(folder: Path) -> Critic:
    """A critic of a `facegen-train critic` run (its critic_a or critic_b folder), folded, eval mode."""
    critic = Critic(config_io.load(CriticTrainConfig, Path(folder) / "config.json").critic)
    critic.load_state_dict(torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=False)["model"])
    return critic.folded().eval()


def train_critic(real: np.ndarray, fake: np.ndarray, cfg: CriticTrainConfig, run: RunFolder, seed: int,
                 progress=None) -> Critic:
    """A critic on uint8 NHWC real vs generated images."""
    if len(real) == 0 or len(fake) == 0:
        raise ValueError(f"the critic needs real and generated images (got {len(real)} and {len(fake)})")
    torch.manual_seed(seed)
    critic = Critic(cfg.critic)
    xr, xf = torch.from_numpy(real), torch.from_numpy(fake)
    half = cfg.batch_size // 2

    def make_batch(step: int, gen: torch.Generator):
        ir = torch.randint(len(xr), (half,), generator=gen)
        jf = torch.randint(len(xf), (half,), generator=gen)
        real, fake = flip_half(xr[ir], gen), flip_half(xf[jf], gen)
        if not cfg.region_weight:
            return real, fake
        im = torch.randint(len(xr), (half,), generator=gen)
        jm = torch.randint(len(xf), (half,), generator=gen)
        return real, fake, *wrong_regions(flip_half(xr[im], gen), xf[jm], critic.map_size, cfg.region_box, gen)

    loop_cfg = loop.LoopConfig.of(cfg, steps=cfg.critic_steps, lr=cfg.critic_lr, weight_decay=0.0,
                                  warmup_steps=min(100, cfg.critic_steps // 10), seed=seed)
    return loop.fit(critic, loop_cfg, run, make_batch, lambda c, b: critic_loss(c, b, cfg.region_weight),
                    progress=progress)


class History:
    """SimGAN's buffer of earlier refined images: the critic keeps rejecting old artefacts, so the
    refiner cannot cycle back to them (§2.3)."""

    def __init__(self, size: int, shape: tuple[int, ...], gen: torch.Generator) -> None:
        self.images = torch.zeros((size, *shape), dtype=torch.uint8)
        self.filled, self.gen = 0, gen

    def push(self, batch: torch.Tensor) -> None:
        for img in batch:
            if self.filled < len(self.images):
                self.images[self.filled] = img
                self.filled += 1
            else:
                self.images[int(torch.randint(len(self.images), (1,), generator=self.gen))] = img

    def sample(self, n: int) -> torch.Tensor:
        return self.images[torch.randint(self.filled, (n,), generator=self.gen)]

    def state_dict(self) -> dict:
        return {"images": self.images, "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        self.images, self.filled = state["images"], int(state["filled"])


def train_refiner(critic: Critic, attributes: torch.nn.Module, real: np.ndarray, fake: np.ndarray,
                  cfg: CriticTrainConfig, run: RunFolder, progress=None) -> Refiner:
    """SimGAN's alternating updates; `critic` (A) is updated in place. `attributes` (uint8/float
    NHWC → conditions) stays frozen: it only measures condition drift."""
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    refiner = Refiner(cfg.refiner)
    attributes.eval().requires_grad_(False)
    opt_r = torch.optim.Adam(refiner.parameters(), lr=cfg.refiner_lr, betas=(0.5, 0.999))
    opt_c = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr_while_refining, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed + 17)
    history = History(cfg.history_size, tuple(fake.shape[1:]), gen)
    start = run.load_state(refiner=refiner, critic=critic, opt_r=opt_r, opt_c=opt_c, history=history)
    xr, xf = torch.from_numpy(real), torch.from_numpy(fake)
    n = cfg.refiner_batch_size
    for step in range(start, cfg.refiner_steps):
        x = flip_half(xf[torch.randint(len(xf), (n,), generator=gen)], gen).float()
        # the refiner's update: the critic is a fixed judge here
        critic.eval().requires_grad_(False)
        refiner.train()
        with torch.no_grad():
            _, realness_map = critic(x)
        refined = refiner(x, realness_map)
        parts = refiner_losses(refined, x, critic, attributes, cfg.self_regularisation, cfg.condition_weight,
                               cfg.large_change_weight, cfg.large_change_above)
        opt_r.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(refiner.parameters(), 10.0)
        opt_r.step()
        # the critic's update: real vs refined, half of the refined from the history buffer
        current = torch.round(refined.detach()).to(torch.uint8)
        fakes = torch.cat([current[: n - n // 2], history.sample(n // 2)]) if history.filled else current
        history.push(current)
        critic.train().requires_grad_(True)
        real_batch = flip_half(xr[torch.randint(len(xr), (n,), generator=gen)], gen)
        c_loss = critic_loss(critic, (real_batch, fakes))
        opt_c.zero_grad(set_to_none=True)
        c_loss.backward()
        opt_c.step()
        metrics = {k: v.item() for k, v in parts.items()} | {"critic_loss": c_loss.item()}
        run.log(step, **metrics)
        if progress:
            progress(step, metrics)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.refiner_steps:
            run.save_state(step + 1, refiner=refiner, critic=critic, opt_r=opt_r, opt_c=opt_c, history=history)
    critic.eval().requires_grad_(True)
    return refiner.eval()


FLAG_CANDIDATES = tuple(round(1.2 - 0.025 * i, 3) for i in range(48))  # 1.2 … 0.025 (above 1: a ramp reaching into real)


def calibrate_projection(retoucher: ProjectionRetouch, real: np.ndarray, max_change: float,
                         generated: np.ndarray | None = None, flagged_share_min: float = 0.0,
                         candidates: tuple[float, ...] = FLAG_CANDIDATES) -> tuple[ProjectionConfig, list[dict]]:
    """The largest flag_below (with the config's ramp) whose retouch changes `real` faces by at
    most `max_change` (mean, 0..255) and, with `generated` faces, puts at least `flagged_share_min`
    of its change on them inside the regions the critic calls generated; and the figures of each
    candidate tried."""
    import dataclasses

    from training.eval_critic import share_inside_flagged

    @torch.no_grad()
    def maps_and_projection(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(images).float()
        maps = torch.cat([retoucher.critic(x[i : i + 256])[1] for i in range(0, len(x), 256)])
        projected = torch.cat([retoucher.project(x[i : i + 128]) for i in range(0, len(x), 128)])
        return x, maps, projected

    def retouched_change(x, maps, projected, cfg) -> torch.Tensor:
        return torch.round(retoucher.with_config(cfg).blend(x, maps, projected)) - x

    real_set = maps_and_projection(real)
    fake_set = maps_and_projection(generated) if generated is not None and len(generated) else None
    tried = []
    for flag in candidates:
        cfg = dataclasses.replace(retoucher.cfg, flag_below=round(float(flag), 4))
        row = {"flag_below": cfg.flag_below, "real_change": float(retouched_change(*real_set, cfg).abs().mean())}
        fits = row["real_change"] <= max_change
        if fake_set is not None:
            row["flagged_share"] = share_inside_flagged(fake_set[1], retouched_change(*fake_set, cfg))
            fits = fits and row["flagged_share"] >= flagged_share_min
        tried.append(row)
        if fits:
            return cfg, tried
    return dataclasses.replace(retoucher.cfg, flag_below=0.0), tried  # nothing fits: leave faces alone


def critic_export_spec(cfg: CriticConfig, version: str = "1"):
    """uint8 RGB NHWC in; realness [N] and realness_map [N, R, R], P(real) in [0, 1]."""
    from training.export import TensorSpec, image_model_spec

    r = cfg.image_size // 2 ** len(cfg.widths)
    cell = cfg.image_size // r
    return image_model_spec(
        "critic", version, cfg.image_size, seed=5678,
        outputs=(TensorSpec("realness", "float32", ("batch",), (0.0, 1.0), "P(real) of the whole face"),
                 TensorSpec("realness_map", "float32", ("batch", r, r), (0.0, 1.0),
                            f"P(real) per region; cell (i, j) covers rows {cell}·i… and columns {cell}·j…")),
        extra={"realness_map": {"size": r, "cell_pixels": cell,
                                "global": "sigmoid of the mean region logit, so map and score agree"}},
    )


def projection_export_spec(cfg: ProjectionConfig, image_size: int, version: str = "1", denoised: bool = False):
    """uint8 RGB NHWC in; retouched uint8 images out (critic A, the autoencoder and, when
    `denoised`, the attribute model and the latent denoiser inside the graph)."""
    import dataclasses

    from training.export import TensorSpec, image_model_spec

    spec = image_model_spec(
        "refiner", version, image_size, seed=8765,
        outputs=(TensorSpec("retouched", "uint8", ("batch", image_size, image_size, 3), (0, 255),
                            "retouched RGB faces, NHWC"),),
        extra={"retouch": {"kind": "projection", "flag_below": cfg.flag_below, "ramp": cfg.ramp,
                           "iterations": cfg.iterations, "latent_denoiser": denoised,
                           "how": "regions the embedded critic scores below flag_below take "
                                  + ("decode(denoise(encode(face), attributes(face)))" if denoised else "decode(encode(face))")
                                  + " of the generator's autoencoder, fully at flag_below − ramp and below"}},
    )
    return dataclasses.replace(spec, atol=1.0)  # rounding to uint8 inside the graph


def refiner_export_spec(cfg: RefinerConfig, version: str = "1"):
    """uint8 RGB NHWC in; retouched uint8 images out (the flagging critic inside the graph)."""
    import dataclasses

    from training.export import TensorSpec, image_model_spec

    spec = image_model_spec(
        "refiner", version, cfg.image_size, seed=8765,
        outputs=(TensorSpec("retouched", "uint8", ("batch", cfg.image_size, cfg.image_size, 3), (0, 255),
                            "retouched RGB faces, NHWC"),),
        extra={"retouch": {"flag_below": cfg.flag_below, "max_change": cfg.max_change,
                           "how": "the embedded training critic's realness map weights a bounded change: "
                                  "regions at or above flag_below stay untouched"}},
    )
    # rounding to uint8 inside the graph: a value at .5 may round either way on another runtime
    return dataclasses.replace(spec, atol=1.0)
