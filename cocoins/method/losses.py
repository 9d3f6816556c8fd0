"""The objective of Section 3.3: DDIM x0 estimates, masked distances, Eqs. 7-9 and the lambda_neg schedule.

Notation follows the paper: x̂*, x̂+, x̂- are the x0 estimates of the anchor, positive and negative
samples; x̂1, x̂2 the estimates without pseudo-word; m the subject mask and m̃ = 1 - m its background.
All distances are per sample ([B]); the losses average over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Keeps 1 / L_dis finite when two estimates coincide exactly. Added, not clamped: a clamp would zero the
# gradient of the negative term exactly when the mapper collapses (L_dis tiny), the moment it must push.
RECIPROCAL_EPS = 1e-12


def ddim_x0(model_output: torch.Tensor, x_t: torch.Tensor, alpha_t: torch.Tensor,
            prediction_type: str = "epsilon") -> torch.Tensor:
    """DDIM approximation of the clean latent (Song et al., 2021), inverting Eq. 1.

    epsilon: x̂ = (x_t - sqrt(1 - a_t) ε̂) / sqrt(a_t);  v_prediction: x̂ = sqrt(a_t) x_t - sqrt(1 - a_t) v̂.
    `alpha_t` is the cumulative product ᾱ_t per sample, shape [B].

    Precision: the result takes x_t's dtype, or model_output's if wider (type promotion), so an fp32 x_t and a
    bf16 ε̂ give an fp32 estimate without a cast. It must be fp32 where the towers run in bf16: near t = T,
    x_t - sqrt(1 - a_t) ε̂ is a difference of two O(1) numbers that nearly cancel and 1 / sqrt(a_t) scales it
    up to 15x (ᾱ_T = 0.0047 in SDXL's schedule); a bf16 result would add a rounding of 2^-9 of x_t, times 15,
    to every entry, while Eq. 7 compares estimates that a pseudo-word moves by far less.
    """
    a = alpha_t.to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
    if prediction_type == "epsilon":
        return (x_t - (1 - a).sqrt() * model_output) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected epsilon, v_prediction or sample")


def mse_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_dis of Appendix B: mean squared error per sample, [B, ...] x [B, ...] -> [B]."""
    return (x - y).pow(2).flatten(1).mean(dim=1)


def masked_distance(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
                    distance: Distance = mse_distance) -> torch.Tensor:
    """L_dis^m(x, y) = L_dis(m · x, m · y) (Section 3.3, Subject Masks); mask None means m = 1."""
    if mask is None:
        return distance(x, y)
    mask = mask.to(x.dtype)
    return distance(mask * x, mask * y)


def negative_weight(step: int, total_steps: int, gamma: float, beta: float, schedule: bool = True) -> float:
    """λ_neg = γ (k / K)^β (Section 4.1), increasing over training; without schedule λ_neg = γ."""
    if not schedule:
        return gamma
    if total_steps <= 0:
        raise ValueError("total_steps K must be positive")
    return gamma * (min(max(step, 0), total_steps) / total_steps) ** beta


def contrastive_loss(d_pos: torch.Tensor, d_neg: torch.Tensor, lambda_neg: float,
                     negative: Literal["reciprocal", "subtract", "none"] = "reciprocal",
                     margin: float = 0.05, reciprocal_of: Literal["sample", "batch"] = "sample") -> torch.Tensor:
    """Eq. 7: L_con = L_dis(x̂*, x̂+) + λ_neg / L_dis(x̂*, x̂-), averaged over the batch.

    `reciprocal_of` says what L_dis(x̂*, x̂-) is inside the reciprocal. "sample": each sample's distance, the
    reciprocals then averaged; the smallest distances rule the mean, and those are the low-t samples whose
    estimates a code barely moves. "batch": the MSE over the whole batch, one number (Appendix B's "L_dis is
    the Mean Squared Error" read literally as a batch loss), ruled by the samples where the code does move
    the estimate.

    `subtract` is "the common form of triplet loss" that Table 3 compares against, as it is commonly written
    (Schroff et al., 2015): max(0, L_dis(x̂*, x̂+) - L_dis(x̂*, x̂-) + margin), no λ_neg. The paper gives no
    margin; `margin` is in L_dis units (0.05 is about the distance two noises put between x0 estimates of
    the mini-world). `none` keeps only the positive distance. The rows "Pos + Neg (subtract)" and "Pos".
    """
    # In fp32 (the step's distances are): L_dis(x̂*, x̂-) is ~1e-9 on a fresh mapper, and RECIPROCAL_EPS = 1e-12
    # is below fp16's smallest subnormal (6e-8), and in bf16 it vanishes when added to 1e-9 (bf16's spacing there
    # is 7e-12): the reciprocal would be of the rounded distance, unguarded.
    if negative == "reciprocal" and reciprocal_of == "batch":
        return d_pos.mean() + lambda_neg / (d_neg.mean() + RECIPROCAL_EPS)
    if reciprocal_of not in ("sample", "batch"):
        raise ValueError(f"unknown reciprocal_of {reciprocal_of!r}; expected sample or batch")
    if negative == "reciprocal":
        per_sample = d_pos + lambda_neg / (d_neg + RECIPROCAL_EPS)
    elif negative == "subtract":
        per_sample = torch.relu(d_pos - d_neg + margin)
    elif negative == "none":
        per_sample = d_pos
    else:
        raise ValueError(f"unknown negative form {negative!r}; expected reciprocal, subtract or none")
    return per_sample.mean()


def background_loss(x_anchor: torch.Tensor, x_positive: torch.Tensor, x_negative: torch.Tensor,
                    x_ref1: torch.Tensor, x_ref2: torch.Tensor, background_mask: torch.Tensor | None,
                    distance: Distance = mse_distance) -> torch.Tensor:
    """Eq. 8: L_back = L^m̃(x̂*, x̂1) + L^m̃(x̂+, x̂2) + L^m̃(x̂-, x̂1), averaged over the batch."""
    per_sample = (masked_distance(x_anchor, x_ref1, background_mask, distance)
                  + masked_distance(x_positive, x_ref2, background_mask, distance)
                  + masked_distance(x_negative, x_ref1, background_mask, distance))
    return per_sample.mean()


def total_loss(loss_con: torch.Tensor, loss_back: torch.Tensor | None, lambda_con: float,
               lambda_back: float) -> torch.Tensor:
    """Eq. 9: L = λ_con L_con + λ_back L_back (L_back absent when background preservation is off)."""
    if loss_back is None:
        return lambda_con * loss_con
    return lambda_con * loss_con + lambda_back * loss_back


@dataclass(frozen=True)
class LossConfig:
    """The switches of Tables 3, 4, 10, 11 and 12."""
    negative: Literal["reciprocal", "subtract", "none"] = "reciprocal"
    schedule: bool = True
    mask: bool = True
    background: bool = True
    gamma: float = 1e-5
    beta: float = 2.0
    lambda_con: float = 1.0
    lambda_back: float = 30.0
    margin: float = 0.05        # `subtract` only: the triplet margin (not in the paper, which gives none)
    reciprocal_of: Literal["sample", "batch"] = "sample"   # Eq. 7's L_dis(x̂*, x̂-): per sample or over the batch


@dataclass
class LossTerms:
    loss: torch.Tensor
    loss_con: torch.Tensor
    loss_back: torch.Tensor | None
    d_pos: torch.Tensor        # mean L_dis(x̂*, x̂+)
    d_neg: torch.Tensor        # mean L_dis(x̂*, x̂-)
    lambda_neg: float


def cocoins_loss(x_anchor: torch.Tensor, x_positive: torch.Tensor, x_negative: torch.Tensor,
                 x_ref1: torch.Tensor | None, x_ref2: torch.Tensor | None, subject_mask: torch.Tensor,
                 step: int, total_steps: int, config: LossConfig,
                 distance: Distance = mse_distance) -> LossTerms:
    """Eqs. 7-9 with the configured ablation switches; `subject_mask` is m at latent resolution [B,1,h,w]."""
    mask = subject_mask if config.mask else None
    d_pos = masked_distance(x_anchor, x_positive, mask, distance)
    d_neg = masked_distance(x_anchor, x_negative, mask, distance)
    lambda_neg = negative_weight(step, total_steps, config.gamma, config.beta, config.schedule)
    loss_con = contrastive_loss(d_pos, d_neg, lambda_neg, config.negative, config.margin,
                                config.reciprocal_of)
    loss_back = None
    if config.background:
        if x_ref1 is None or x_ref2 is None:
            raise ValueError("background loss needs the reference estimates x̂1 and x̂2")
        loss_back = background_loss(x_anchor, x_positive, x_negative, x_ref1, x_ref2, 1 - subject_mask, distance)
    loss = total_loss(loss_con, loss_back, config.lambda_con, config.lambda_back)
    return LossTerms(loss, loss_con, loss_back, d_pos.detach().mean(), d_neg.detach().mean(), lambda_neg)
