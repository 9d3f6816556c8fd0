"""Training triplets of Section 3.3: prompts and codes (Eq. 5) and noisy latents (Eq. 6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class TripletConfig:
    """Table 5's switches: reuse caption 1 (same_prompt) or noise ε1 (same_noise) for the positive.

    `min_timestep` draws t uniformly from [min_timestep, T) instead of the paper's [0, T). Not in the paper:
    tried on the mini-world to keep low-noise samples (tiny L_dis(x̂*, x̂-), huge λ_neg / L_dis) from
    dominating Eq. 7's negative term; it did not restore Div there (README, "The mini-world").
    """
    same_prompt: bool = False
    same_noise: bool = False
    min_timestep: int = 0

    def __post_init__(self):
        if self.min_timestep < 0:
            raise ValueError(f"min_timestep must be >= 0, got {self.min_timestep}")


def add_noise(x: torch.Tensor, noise: torch.Tensor, alpha_t: torch.Tensor) -> torch.Tensor:
    """Eq. 1: x_t = sqrt(ᾱ_t) x + sqrt(1 - ᾱ_t) ε, with ᾱ_t per sample ([B])."""
    a = alpha_t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return a.sqrt() * x + (1 - a).sqrt() * noise


def triplet_prompts(captions1: Sequence[str], captions2: Sequence[str], config: TripletConfig
                    ) -> tuple[list[str], list[str], list[str]]:
    """Eq. 5, prompt side: anchor e* = e1, positive e+ = e2 (e1 if same_prompt), negative e- = e1."""
    anchor = list(captions1)
    positive = list(captions1 if config.same_prompt else captions2)
    negative = list(captions1)
    return anchor, positive, negative


def triplet_pseudo_words(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Eq. 5, code side: anchor and positive carry w1 = f(z1), the negative w2 = f(z2). [3B, S, d]."""
    return torch.cat([w1, w1, w2], dim=0)


def triplet_latents(x: torch.Tensor, eps1: torch.Tensor, eps2: torch.Tensor, alpha_t: torch.Tensor,
                    config: TripletConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 6: x_t* and x_t- share ε1 (the hard case); x_t+ uses ε2 (ε1 if same_noise)."""
    x_anchor = add_noise(x, eps1, alpha_t)
    x_positive = x_anchor if config.same_noise else add_noise(x, eps2, alpha_t)
    return x_anchor, x_positive, x_anchor
