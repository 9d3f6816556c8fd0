"""Latent-space subject consistency: the always-available Sim / Div of the final denoised latents.

Defined like the paper's face metrics (Section 4.2) but on the subject region of the final latents instead of
ArcFace embeddings, so every run (offline included) has a consistency and a diversity number:
- Sim: mean pairwise cosine similarity between generations of the same identity (same code, other
  prompts and seeds);
- Div: 1 - mean pairwise cosine similarity between the identities' averaged vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


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


def mean_pairwise_cosine(vectors: torch.Tensor) -> float:
    if len(vectors) < 2:
        raise ValueError("need at least two vectors for a pairwise similarity")
    v = F.normalize(vectors, dim=1)
    sims = v @ v.T
    n = len(v)
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


@dataclass(frozen=True)
class SimDiv:
    sim: float
    div: float
    identities: int
    images: int


def sim_div(vectors: torch.Tensor, identities: Sequence[str]) -> SimDiv:
    """Sim over same-identity pairs, Div over the identities' mean vectors (Section 4.2 definitions)."""
    groups: dict[str, list[int]] = {}
    for i, ident in enumerate(identities):
        groups.setdefault(ident, []).append(i)
    sims, weights, means = [], [], []
    for rows in groups.values():
        if len(rows) >= 2:
            sims.append(mean_pairwise_cosine(vectors[rows]))
            weights.append(len(rows) * (len(rows) - 1))
        means.append(vectors[rows].mean(dim=0))
    if not sims or len(means) < 2:
        raise ValueError("Sim needs an identity with two images and Div needs two identities")
    sim = sum(s * w for s, w in zip(sims, weights)) / sum(weights)
    div = 1.0 - mean_pairwise_cosine(torch.stack(means))
    return SimDiv(sim=sim, div=div, identities=len(groups), images=len(vectors))
