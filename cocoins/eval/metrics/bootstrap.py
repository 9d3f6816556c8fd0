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
from typing import Optional, Sequence

import numpy as np

from cocoins.simdiv import GroupStats


@dataclass(frozen=True)
class Bootstrap:
    resamples: int = 1000      # 0: no intervals
    seed: int = 0
    level: float = 0.95

    def counts(self, units: int) -> np.ndarray:
        """[resamples, units] multinomial counts: how often each unit is drawn in each resample."""
        rng = np.random.default_rng(self.seed)
        return rng.multinomial(units, np.full(units, 1.0 / units), size=self.resamples).astype(np.float64)

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
    n = boot.counts(len(index))
    return boot.interval(_ratio(n @ sums, n @ sizes))
