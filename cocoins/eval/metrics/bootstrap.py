"""Bootstrap intervals of Sim, Div and per-image means: how much the score depends on which people were drawn.

The resampling unit is what counts as one independent person: a code (identity) for the method, each image
for the no-pseudo-word base model (it has no identity input; its Div already counts every image as its own
person). One resample draws as many units as there are, with replacement (multinomial counts), and re-scores
from `simdiv.GroupStats` without new cosines:
- Sim = the resampled identities' pair sums over their pair counts (Sim pools pairs, as `sim_div` does);
- Div = 1 - the count-weighted mean cosine over pairs of *different* identities. A unit drawn twice is not
  paired with itself: its cosine 1 is an artefact of resampling, not two people looking alike;
- a per-image mean (scene fidelity) = the count-weighted mean of the units' image sums.
The interval is the percentile interval of the resampled values (a resample whose value is undefined, e.g.
one identity drawn every time, is left out). Same arguments, same interval: the generator is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cocoins.simdiv import Batches, GroupStats, _group_rows

# Host memory of one block of resamples (counts and per-resample sums), whatever the number of images.
BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class Bootstrap:
    resamples: int = 1000      # 0: no intervals
    seed: int = 0
    level: float = 0.95

    def counts(self, units: int) -> np.ndarray:
        """[resamples, units] multinomial counts: how often each unit is drawn in each resample."""
        return np.concatenate(list(self.count_blocks(units, self.resamples)) or [np.zeros((0, units))])

    def count_blocks(self, units: int, rows: int) -> Iterator[np.ndarray]:
        """`counts(units)` in blocks of at most `rows` resamples, the same numbers (one generator drawn row
        after row), so R x units never has to be in memory at once when the units are images."""
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.resamples, max(1, rows)):
            size = min(max(1, rows), self.resamples - start)
            yield rng.multinomial(units, np.full(units, 1.0 / units), size=size).astype(np.float64)

    def block_rows(self, width: int) -> int:
        """Resamples per block so that a block of float64 [rows, width] stays within BLOCK_BYTES."""
        return max(1, min(self.resamples, BLOCK_BYTES // (8 * max(1, width))))

    def interval(self, values: np.ndarray) -> tuple[Optional[float], Optional[float]]:
        values = values[np.isfinite(values)]
        if not len(values):
            return None, None
        tail = 100 * (1 - self.level) / 2
        low, high = np.percentile(values, [tail, 100 - tail])
        return float(low), float(high)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def sim_div_interval(stats: GroupStats, boot: Bootstrap) -> dict[str, Optional[float]]:
    """{sim_ci_low, sim_ci_high, div_ci_low, div_ci_high} of one GroupStats; None where the statistic is."""
    out = dict.fromkeys(("sim_ci_low", "sim_ci_high", "div_ci_low", "div_ci_high"))
    k = len(stats.names)
    if boot.resamples < 1 or k < 2:
        return out
    n = boot.counts(k)
    if stats.sim() is not None:
        out["sim_ci_low"], out["sim_ci_high"] = boot.interval(_ratio(n @ stats.pair_sums, n @ stats.pair_counts))
    c = stats.mean_cosines
    same = (n ** 2) @ np.diag(c)
    cross = ((n @ c) * n).sum(axis=1) - same
    pairs = n.sum(axis=1) ** 2 - (n ** 2).sum(axis=1)
    out["div_ci_low"], out["div_ci_high"] = boot.interval(1.0 - _ratio(cross, pairs))
    return out


def mean_interval(values: Sequence[float], units: Sequence[str],
                  boot: Bootstrap) -> tuple[Optional[float], Optional[float]]:
    """Percentile interval of the mean of per-image `values`, resampling the `units` (identities or images)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(units):
        raise ValueError(f"got {len(values)} values for {len(units)} unit labels")
    index = {u: i for i, u in enumerate(dict.fromkeys(str(u) for u in units))}
    if boot.resamples < 1 or len(index) < 2:
        return None, None
    which = np.asarray([index[str(u)] for u in units])
    sums = np.bincount(which, weights=values, minlength=len(index))
    sizes = np.bincount(which, minlength=len(index)).astype(np.float64)
    means = [_ratio(n @ sums, n @ sizes) for n in boot.count_blocks(len(index), boot.block_rows(len(index)))]
    return boot.interval(np.concatenate(means))


@dataclass(frozen=True)
class UnitDiv:
    """Div of a group whose every unit (an image, for a model without identity input) counts as one person."""
    units: int                      # units with at least one vector
    div: Optional[float]            # None: fewer than two units
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None


def unit_div(batches: Batches, rows: np.ndarray, units: Sequence[str], boot: Bootstrap) -> UnitDiv:
    """Div = 1 - mean cosine over ordered pairs of different units' unit mean vectors u, and its bootstrap
    interval, streamed: no units x units matrix is formed.

    With S = sum of u: sum over pairs of distinct units of cos = ||S||^2 - sum ||u||^2. A resample drawing unit
    i n_i times has pair sum ||sum n_i u_i||^2 - sum n_i^2 ||u_i||^2 over (sum n_i)^2 - sum n_i^2 pairs: what
    `sim_div_interval` computes from the cosine matrix, here from one [resamples, d] sum per block of
    resamples, so memory is a block, not the number of images squared. What it resamples: the units, with
    replacement, as many as there are (the multinomial counts of `Bootstrap.counts`); a unit drawn twice is not
    paired with itself. A unit with several rows (one image rendered for several codes under shared noise) is
    their normalised mean, finished at its last row. `rows` are table rows in ascending order, `units` one
    label per row."""
    rows = np.asarray(rows)
    names = list(dict.fromkeys(str(u) for u in units))
    k = len(names)
    if k < 2:
        return UnitDiv(k, None)
    index = {name: i for i, name in enumerate(names)}
    unit = np.asarray([index[str(u)] for u in units], dtype=np.int64)
    size = np.bincount(unit, minlength=k)
    last = np.zeros(k, dtype=np.int64)
    last[unit] = np.arange(len(unit))            # the last position of each unit (later writes win)

    def finished() -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(unit ids, their unit mean vectors) as each unit's last row goes by."""
        open_sums: dict[int, torch.Tensor] = {}
        for pos, u in _group_rows(batches, rows):
            ids = unit[pos]
            single = size[ids] == 1
            out_ids, out = [ids[single]], [u[torch.from_numpy(single)]]
            for j in np.flatnonzero(~single):
                i = int(ids[j])
                open_sums[i] = open_sums[i] + u[j] if i in open_sums else u[j].clone()
                if pos[j] == last[i]:
                    out_ids.append(np.asarray([i]))
                    out.append((open_sums.pop(i) / size[i])[None])
            yield np.concatenate(out_ids), F.normalize(torch.cat(out), dim=1)

    def sums(counts: Optional[np.ndarray]) -> tuple[torch.Tensor, float, Optional[torch.Tensor], np.ndarray]:
        total, squares, per, same = None, 0.0, None, np.zeros(0 if counts is None else len(counts))
        for ids, u in finished():
            norms = (u * u).sum(dim=1)
            total = u.sum(dim=0) if total is None else total + u.sum(dim=0)
            squares += float(norms.sum())
            if counts is not None:
                n = torch.from_numpy(counts[:, ids])
                per = n @ u if per is None else per + n @ u
                same += ((n * n) @ norms).numpy()
        return total, squares, per, same

    total, squares, _, _ = sums(None)
    div = float(1.0 - ((total * total).sum() - squares) / (k * (k - 1)))
    if boot.resamples < 1:
        return UnitDiv(k, div)
    values = []
    for counts in boot.count_blocks(k, boot.block_rows(k + len(total))):
        _, _, per, same = sums(counts)
        cross = (per * per).sum(dim=1).numpy() - same
        pairs = counts.sum(axis=1) ** 2 - (counts ** 2).sum(axis=1)
        values.append(1.0 - _ratio(cross, pairs))
    low, high = boot.interval(np.concatenate(values))
    return UnitDiv(k, div, low, high)
