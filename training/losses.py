"""Losses, kept apart from the networks (the model files hold no training code).

Generator (NVAE, Vahdat & Kautz 2020):
- `dmol_nll`: negative log-likelihood of 8-bit images under a discretized mixture of logistics
  (Salimans et al. 2017, PixelCNN++ eq. 2, with the linear channel coupling), in nats per image;
- `kl_warmup` and `kl_balance`: the KL coefficient ramps from a small value to 1 (§3.2 / App. A),
  and during the ramp each group's KL is reweighted ∝ its mean size over its spatial share, so
  no group collapses (NVAE App. A, "KL balancing");
- `SpectralRegularizer`: λ·Σ σ_max(W) over conv layers, σ_max by power iteration (§3.2, eq. 5);
- `bn_scale_penalty`: penalises large BatchNorm scales (NVAE's weight_decay_norm term).

Critic and refiner (SimGAN, Shrivastava et al. 2017):
- `patch_bce`: every region of the critic's map is one real/fake decision (§2.3, local adversarial loss);
- `refiner_losses`: adversarial + self-regularisation (eq. 4, L1 to the input) + condition
  consistency through a frozen attribute model, so a retouch never changes the requested conditions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from services.shared.conditions import CONDITIONS
from training.models.layers import as_faces


def dmol_nll(x: torch.Tensor, params: torch.Tensor, mixtures: int, per_pixel: bool = False) -> torch.Tensor:
    """-log p(x) per image (nats, summed over pixels and channels); x in [-1, 1], NCHW, 8-bit grid.
    With per_pixel, per pixel instead ([N, H, W], summed over channels only)."""
    n, _, h, w = params.shape
    logit_pi = params[:, :mixtures]  # [N, M, H, W]
    rest = params[:, mixtures:].reshape(n, 3, 3 * mixtures, h, w)
    means = rest[:, :, :mixtures]
    log_s = rest[:, :, mixtures : 2 * mixtures].clamp(min=-7.0)
    coeffs = torch.tanh(rest[:, :, 2 * mixtures :])
    xs = x[:, :, None]  # [N, 3, 1, H, W]
    # channel coupling: green depends on red, blue on red and green (PixelCNN++)
    m_r = means[:, 0]
    m_g = means[:, 1] + coeffs[:, 0] * xs[:, 0]
    m_b = means[:, 2] + coeffs[:, 1] * xs[:, 0] + coeffs[:, 2] * xs[:, 1]
    mu = torch.stack([m_r, m_g, m_b], dim=1)
    centred = xs - mu
    inv_s = torch.exp(-log_s)
    plus, minus = inv_s * (centred + 1.0 / 255), inv_s * (centred - 1.0 / 255)
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    log_cdf_plus = plus - F.softplus(plus)  # log σ(plus): for x = -1 (the lowest bin)
    log_one_minus_cdf_min = -F.softplus(minus)  # log(1 − σ(minus)): for x = 1 (the highest bin)
    mid = inv_s * centred
    log_pdf_mid = mid - log_s - 2.0 * F.softplus(mid)  # for tiny bins where cdf_delta underflows
    log_probs = torch.where(
        xs < -0.999, log_cdf_plus,
        torch.where(xs > 0.999, log_one_minus_cdf_min,
                    torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid - math.log(127.5))),
    )
    log_probs = log_probs.sum(dim=1) + F.log_softmax(logit_pi, dim=1)  # [N, M, H, W]
    nll = -torch.logsumexp(log_probs, dim=1)  # [N, H, W]
    return nll if per_pixel else nll.flatten(1).sum(dim=1)


def bits_per_dim(nats_per_image: torch.Tensor, dims: int) -> torch.Tensor:
    return nats_per_image / (dims * math.log(2.0))


def kl_warmup(step: int, warmup_steps: int, floor: float = 1e-4) -> float:
    """NVAE's KL coefficient: linear from `floor` to 1 over the warm-up, then 1."""
    if warmup_steps <= 0:
        return 1.0
    return max(floor, min(1.0, step / warmup_steps))


def group_alpha(areas: list[int], groups_per_scale: list[int]) -> torch.Tensor:
    """Per-group balancing prior: proportional to the group's spatial area over the number of
    groups at its scale (NVAE's 'square' kl_balancer_coeff), normalised to a minimum of 1."""
    alpha = torch.tensor([a / g for a, g in zip(areas, groups_per_scale, strict=True)], dtype=torch.float32)
    return alpha / alpha.min()


def kl_balance(kls: torch.Tensor, beta: float, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted KL per image and the group coefficients. kls: [N, G] nats per group.

    During warm-up (β < 1) each group's weight ∝ (its mean |KL| + 0.01) / α_g, normalised to mean 1
    and not differentiated through; afterwards every group weighs 1 (NVAE App. A)."""
    if beta >= 1.0:
        coeffs = torch.ones(kls.shape[1], device=kls.device)
    else:
        c = kls.detach().abs().mean(dim=0) + 0.01
        c = c / alpha.to(kls.device) * c.sum()
        coeffs = c / c.mean()
    return beta * (kls * coeffs).sum(dim=1), coeffs


def nvae_kl(kl_all: torch.Tensor, step: int, warmup_steps: int, balance: bool, areas: list[int],
            groups_per_scale: list[int]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The KL term NVAE minimises, for KL per group kl_all [N, G]: (weighted KL per image [N], the
    group coefficients [G], β) — warm-up, and balancing during it when `balance`."""
    beta = kl_warmup(step, warmup_steps)
    if balance:
        weighted, coeffs = kl_balance(kl_all, beta, group_alpha(areas, groups_per_scale))
    else:
        weighted, coeffs = beta * kl_all.sum(1), torch.ones(kl_all.shape[1], device=kl_all.device)
    return weighted, coeffs, beta


def nvae_regularisers(model: nn.Module, spectral: SpectralRegularizer | None, spectral_weight: float,
                      bn_weight: float) -> torch.Tensor:
    """NVAE's spectral regularisation and BatchNorm-scale penalty, weighted (0 weight: left out)."""
    penalty = torch.zeros((), device=next(model.parameters()).device)
    if spectral_weight and spectral is not None:
        penalty = penalty + spectral_weight * spectral()
    if bn_weight:
        penalty = penalty + bn_weight * bn_scale_penalty(model)
    return penalty


def bn_scale_penalty(model: nn.Module) -> torch.Tensor:
    """Σ over BatchNorm layers of the largest |scale| (NVAE bounds BN scales this way)."""
    terms = [m.weight.abs().max() for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class SpectralRegularizer(nn.Module):
    """λ·Σ σ_max(W) over conv layers, σ_max estimated by power iteration (NVAE eq. 5).

    The power-iteration vectors are buffers of this module, so they are saved with the training
    state (no state outside a state_dict)."""

    def __init__(self, model: nn.Module, iterations: int = 1) -> None:
        super().__init__()
        self.convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
        self.iterations = iterations
        gen = torch.Generator().manual_seed(0)
        for i, conv in enumerate(self.convs):
            rows, cols = conv.weight.shape[0], conv.weight[0].numel()
            self.register_buffer(f"u{i}", F.normalize(torch.randn(rows, generator=gen), dim=0))
            self.register_buffer(f"v{i}", F.normalize(torch.randn(cols, generator=gen), dim=0))

    def forward(self) -> torch.Tensor:
        total = torch.zeros((), device=self.convs[0].weight.device) if self.convs else torch.zeros(())
        for i, conv in enumerate(self.convs):
            w = conv.weight.flatten(1)
            u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
            with torch.no_grad():
                for _ in range(self.iterations):
                    v = F.normalize(w.t() @ u, dim=0)
                    u = F.normalize(w @ v, dim=0)
                getattr(self, f"u{i}").copy_(u)
                getattr(self, f"v{i}").copy_(v)
            total = total + torch.dot(u, w @ v)  # σ_max estimate, differentiable in W
        return total


def condition_columns(names: tuple[str, ...]) -> list[int]:
    """The columns of CONDITIONS a consistency term reads: `names`, or all five when empty."""
    unknown = set(names) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown condition names {sorted(unknown)}; known: {list(CONDITIONS)}")
    return [CONDITIONS.index(c) for c in names] or list(range(len(CONDITIONS)))


def condition_drift(attributes: nn.Module, images: torch.Tensor, wanted: torch.Tensor,
                    names: tuple[str, ...] = ()) -> torch.Tensor:
    """Mean |read − wanted| over the conditions `names` (all five when empty), the attribute model reading
    decoded NCHW images in [-1, 1] (gradients flow into the images, not the model's weights
    when the caller froze them): the condition-consistency term of stages 2 and 3."""
    columns = condition_columns(names)
    return (attributes(as_faces(images))[:, columns] - wanted[:, columns]).abs().mean()


def unrealness(critic: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss for decoded NCHW images in [-1, 1]: every region of the
    critic's map asked to look real, as the refiner asks (gradients flow into the images)."""
    return patch_bce(critic.patch_logits(as_faces(images)), real=True)


def patch_bce(patch_logits: torch.Tensor, real: bool | torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over every region of a [N, R, R] logit map; the target is all
    real, all generated, or a map of how real each region is."""
    if not isinstance(real, torch.Tensor):
        real = torch.ones_like(patch_logits) if real else torch.zeros_like(patch_logits)
    return F.binary_cross_entropy_with_logits(patch_logits, real)


def refiner_losses(refined: torch.Tensor, inputs: torch.Tensor, critic: nn.Module, attributes: nn.Module,
                   self_regularisation: float, condition: float, large_change: float = 0.0,
                   large_change_above: float = 6.0) -> dict[str, torch.Tensor]:
    """The refiner's objective for float NHWC images in [0, 255] (refined keeps its graph).

    adversarial: the critic should call every region of the refined image real;
    self_regularisation: mean |refined − input| in [0, 1] units (keeps the retouch small and local);
    condition: mean |attributes(refined) − attributes(input)|, the drift of the five conditions;
    large_change: mean of the part of each channel's change beyond `large_change_above` (0..255
    units), in 0..1 units: L1 alone lets every pixel move a little; this makes moving any pixel
    far expensive, so a retouch stays subtle where it is not needed.
    Gradients flow through the critic and the attribute model into `refined` only; the caller
    keeps both models' parameters out of the refiner's optimiser."""
    adversarial = patch_bce(critic.patch_logits(refined), real=True)
    regularisation = (refined - inputs).abs().mean() / 255.0
    with torch.no_grad():
        wanted = attributes(inputs)
    drift = (attributes(refined) - wanted).abs().mean()
    beyond = F.relu((refined - inputs).abs() - large_change_above).mean() / 255.0
    total = adversarial + self_regularisation * regularisation + condition * drift + large_change * beyond
    return {"loss": total, "adversarial": adversarial, "self_regularisation": regularisation, "condition": drift,
            "large_change": beyond}
