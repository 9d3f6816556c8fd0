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
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def as_tensor(vectors) -> torch.Tensor:
    return torch.as_tensor(np.asarray(vectors, dtype=np.float64) if not torch.is_tensor(vectors) else vectors,
                           dtype=torch.float64)


def mean_pairwise_cosine(vectors) -> float:
    """Mean cosine similarity over the n (n - 1) ordered pairs of distinct rows of [n, d]: with unit rows u,
    (||sum u||^2 - sum ||u||^2) / (n (n - 1)), exact and with no n x n matrix."""
    v = as_tensor(vectors)
    if len(v) < 2:
        raise ValueError("need at least two vectors for a pairwise similarity")
    u = F.normalize(v, dim=1)
    n, total = len(u), u.sum(dim=0)
    return float(((total * total).sum() - (u * u).sum()) / (n * (n - 1)))


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


# (table rows, vectors [b, d]) in ascending row order, fresh on each call: every image's vectors one batch at a
# time, from memory or from the render cache on disk, so a group is scored without holding all its vectors.
Batches = Callable[[], Iterable[tuple[np.ndarray, torch.Tensor]]]
BATCH_ROWS = 4096


def in_memory(vectors: torch.Tensor, batch_rows: int = BATCH_ROWS) -> Batches:
    """`Batches` over vectors already in memory, [N, ...] rows in table order."""
    def batches():
        for start in range(0, len(vectors), batch_rows):
            yield np.arange(start, min(start + batch_rows, len(vectors))), vectors[start:start + batch_rows]
    return batches


def select_rows(batches: Batches, rows: np.ndarray) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(positions in `rows`, vectors as read) of the batches' rows that belong to `rows` (ascending)."""
    if not len(rows):
        return
    where = np.full(int(rows.max()) + 1, -1)
    where[rows] = np.arange(len(rows))
    for table_rows, vectors in batches():
        inside = table_rows < len(where)
        pos = np.full(len(table_rows), -1)
        pos[inside] = where[table_rows[inside]]
        keep = np.flatnonzero(pos >= 0)
        if len(keep):
            yield pos[keep], vectors[torch.from_numpy(keep)]


def _group_rows(batches: Batches, rows: np.ndarray) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """`select_rows` with each vector flattened to float64 and scaled to unit length (a batch at a time)."""
    for pos, v in select_rows(batches, rows):
        yield pos, F.normalize(v.flatten(1).to(torch.float64), dim=1)


def group_stats_stream(batches: Batches, rows: np.ndarray, identities: Sequence[str]) -> GroupStats:
    """GroupStats of the vectors of table `rows` (ascending) grouped by `identities` (one per row), read one
    batch at a time: per identity only the sum of its unit vectors and their squared norms are kept
    (pair sum = ||sum||^2 - sum of ||u||^2, exactly the off-diagonal sum of its cosine matrix)."""
    if len(rows) != len(identities):
        raise ValueError(f"got {len(rows)} rows for {len(identities)} identity labels")
    names = list(dict.fromkeys(str(i) for i in identities))
    index = {name: k for k, name in enumerate(names)}
    ident = np.asarray([index[str(i)] for i in identities], dtype=np.int64)
    sizes = np.bincount(ident, minlength=len(names)).astype(np.float64)
    sums, squares = None, torch.zeros(len(names), dtype=torch.float64)
    for pos, u in _group_rows(batches, np.asarray(rows)):
        g = torch.from_numpy(ident[pos])
        if sums is None:
            sums = torch.zeros(len(names), u.shape[1], dtype=torch.float64)
        sums.index_add_(0, g, u)
        squares.index_add_(0, g, (u * u).sum(dim=1))
    if sums is None:
        return GroupStats([], np.zeros(0), np.zeros(0), np.zeros((0, 0)), 0)
    pair_sums = ((sums * sums).sum(dim=1) - squares).numpy()
    means = F.normalize(sums / torch.from_numpy(sizes)[:, None], dim=1)
    return GroupStats(names, pair_sums, sizes * (sizes - 1), (means @ means.T).numpy(), int(sizes.sum()))


def group_stats(vectors: Sequence | torch.Tensor, identities: Sequence[str]) -> GroupStats:
    """Per-identity pair sums and the cosines between identity means of `vectors` [N, d]; rows that are None
    (an image without a detected face) are dropped."""
    if len(vectors) != len(identities):
        raise ValueError(f"got {len(vectors)} vectors for {len(identities)} identity labels")
    rows = [i for i, v in enumerate(vectors) if v is not None]
    if not rows:
        return GroupStats([], np.zeros(0), np.zeros(0), np.zeros((0, 0)), 0)
    stacked = torch.stack([as_tensor(vectors[i]).flatten() for i in rows])
    return group_stats_stream(in_memory(stacked), np.arange(len(rows)), [identities[i] for i in rows])


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
