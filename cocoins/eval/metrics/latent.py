"""Latent-space subject consistency: the always-available Sim / Div of the final denoised latents.

Defined like the paper's face metrics (Section 4.2, `simdiv.sim_div`) but on the subject region of the final
latents instead of ArcFace embeddings, so every run (offline included) has a consistency and a diversity
number: Sim over generations of the same identity (same code, other prompts and seeds), Div = 1 - cosine
between the identities' averaged vectors. Only images this pipeline rendered have latents.
"""

from __future__ import annotations

from typing import Sequence

import torch

from cocoins.simdiv import sim_div


def center_ellipse_mask(height: int, width: int, fraction: float = 0.6) -> torch.Tensor:
    """Where a portrait's subject is: an ellipse over the central `fraction` of the frame, [1, h, w]."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height - 0.5
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width - 0.5
    r = (ys[:, None] / (fraction / 2)) ** 2 + (xs[None, :] / (fraction / 2)) ** 2
    return (r <= 1).float()[None]


def subject_vectors(latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flattened, mean-centred subject region of each latent: [N, C, h, w] -> [N, C*h*w]."""
    x = (latents.float() * mask).flatten(1)
    return x - x.mean(dim=1, keepdim=True)


def latent_vectors(latents: torch.Tensor) -> torch.Tensor:
    """The vectors the latent metric compares: each final latent's subject region [N, 4, h, w] -> [N, 4*h*w]."""
    return subject_vectors(latents, center_ellipse_mask(*latents.shape[-2:]))


def latent_metrics(latents: torch.Tensor, identities: Sequence[str]) -> tuple[dict, str]:
    """({latent_sim, latent_div}, reason for a null) of final latents [N, 4, h, w] grouped by identity."""
    result = sim_div(latent_vectors(latents), list(identities))
    return {"latent_sim": result.sim, "latent_div": result.div}, result.reason
