"""Sim / Div of Section 4.2 as a pure function of embedding vectors (faces, latents, DreamSim alike).

Paper: "Face similarity is the pairwise cosine similarity of ArcFace embeddings between images of the same
identities. To estimate diversity, we first average the face embeddings on the same identities. We then
calculate the pairwise cosine similarity between the averaged embeddings of all identities."

Our reading, documented because the text is loose:
- Sim = mean cosine over every unordered pair of images that share an identity (pooled over identities, so
  an identity with more images weighs more; with equal images per identity it equals the mean of the
  per-identity means). Identities with a single image contribute no pair.
- Div = 1 - mean pairwise cosine between the identities' averaged embeddings. The text calls the last
  step a "pairwise cosine similarity", but Div is reported as higher-is-better and CelebA (10K different
  people) scores 0.992 in Table 1, which only fits 1 - cosine (different ArcFace identities have cosine near
  0). Embeddings are L2-normalised before averaging; the cosine normalises the averages again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def as_tensor(vectors) -> torch.Tensor:
    return torch.as_tensor(np.asarray(vectors, dtype=np.float64) if not torch.is_tensor(vectors) else vectors,
                           dtype=torch.float64)


def mean_pairwise_cosine(vectors) -> float:
    """Mean cosine similarity over the n (n - 1) ordered pairs of distinct rows of [n, d]."""
    v = as_tensor(vectors)
    if len(v) < 2:
        raise ValueError("need at least two vectors for a pairwise similarity")
    v = F.normalize(v, dim=1)
    sims = v @ v.T
    n = len(v)
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


@dataclass(frozen=True)
class SimDiv:
    sim: float | None          # None: no identity has two vectors
    div: float | None          # None: fewer than two identities have a vector
    identities: int            # identities with at least one vector
    vectors: int               # vectors used (missing ones dropped)
    reason: str = ""           # why sim or div is None


@dataclass(frozen=True)
class GroupStats:
    """What Sim and Div need of each identity, so a resample of identities re-scores without new cosines."""
    names: list[str]           # identities with at least one vector, in first-seen order
    pair_sums: np.ndarray      # [k] sum of cosines over the ordered pairs of an identity's vectors
    pair_counts: np.ndarray    # [k] n (n - 1): its ordered pairs
    mean_cosines: np.ndarray   # [k, k] cosine between the identities' averaged vectors
    vectors: int

    def sim(self) -> float | None:
        pairs = self.pair_counts.sum()
        return float(self.pair_sums.sum() / pairs) if pairs else None

    def div(self) -> float | None:
        k = len(self.names)
        if k < 2:
            return None
        c = self.mean_cosines
        return float(1.0 - (c.sum() - np.trace(c)) / (k * (k - 1)))


def group_stats(vectors: Sequence | torch.Tensor, identities: Sequence[str]) -> GroupStats:
    """Per-identity pair sums and the cosines between identity means of `vectors` [N, d]; rows that are None
    (an image without a detected face) are dropped."""
    if len(vectors) != len(identities):
        raise ValueError(f"got {len(vectors)} vectors for {len(identities)} identity labels")
    groups: dict[str, list] = {}
    for v, ident in zip(vectors, identities):
        if v is not None:
            groups.setdefault(str(ident), []).append(F.normalize(as_tensor(v).flatten(), dim=0))
    sums, counts, means = [], [], []
    for rows in groups.values():
        g = torch.stack(rows)
        cos = g @ g.T
        sums.append(float(cos.sum() - cos.diagonal().sum()))
        counts.append(len(rows) * (len(rows) - 1))
        means.append(g.mean(dim=0))
    mean_cosines = np.zeros((0, 0))
    if means:
        m = F.normalize(torch.stack(means), dim=1)
        mean_cosines = (m @ m.T).numpy()
    return GroupStats(list(groups), np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64),
                      mean_cosines, sum(len(g) for g in groups.values()))


def sim_div(vectors: Sequence | torch.Tensor, identities: Sequence[str]) -> SimDiv:
    """Sim and Div (Section 4.2) of `vectors` [N, d] grouped by `identities`; rows that are None are dropped
    (an image without a detected face), and a metric that cannot be formed is None with a reason."""
    stats = group_stats(vectors, identities)
    sim, div, reasons = stats.sim(), stats.div(), []
    if sim is None:
        reasons.append(f"no identity has two embeddings ({stats.vectors} over {len(stats.names)} identities)")
    if div is None:
        reasons.append(f"Div needs two identities with an embedding, got {len(stats.names)}")
    return SimDiv(sim=sim, div=div, identities=len(stats.names), vectors=stats.vectors, reason="; ".join(reasons))
