"""Bootstrap intervals of Sim / Div / per-image means on hand-made embeddings, checked against the definition."""

import numpy as np
import pytest
import torch

from cocoins.eval.metrics.bootstrap import Bootstrap, mean_interval, sim_div_interval, unit_div
from cocoins.simdiv import group_stats, sim_div

E = np.eye(4)


def test_group_stats_by_hand():
    # a: two equal vectors (2 ordered pairs, cosine 1); b: two orthogonal ones (2 pairs, cosine 0); c: one.
    stats = group_stats([E[0], E[0], E[1], E[2], E[3]], ["a", "a", "b", "b", "c"])
    assert stats.names == ["a", "b", "c"] and stats.vectors == 5
    assert stats.pair_sums.tolist() == pytest.approx([2.0, 0.0, 0.0]) and stats.pair_counts.tolist() == [2, 2, 0]
    assert stats.sim() == pytest.approx(0.5)
    # identity means: a -> E0, b -> (E1 + E2) / sqrt 2, c -> E3: pairwise cosines all 0.
    assert stats.div() == pytest.approx(1.0)
    assert sim_div([E[0], E[0], E[1], E[2], E[3]], ["a", "a", "b", "b", "c"]).sim == pytest.approx(0.5)


def test_degenerate_populations_give_exact_intervals():
    boot = Bootstrap(resamples=200, seed=0)
    orthogonal = group_stats([E[i] for i in range(4) for _ in range(2)], [str(i) for i in range(4) for _ in range(2)])
    ci = sim_div_interval(orthogonal, boot)
    # Every resample with two different identities has Div exactly 1 and Sim exactly 1.
    assert (ci["div_ci_low"], ci["div_ci_high"]) == pytest.approx((1.0, 1.0))
    assert (ci["sim_ci_low"], ci["sim_ci_high"]) == pytest.approx((1.0, 1.0))
    one_person = group_stats([E[0]] * 6, ["a", "a", "b", "b", "c", "c"])
    ci = sim_div_interval(one_person, boot)
    # A code drawn twice is not paired with itself, so Div stays 0 (not pulled below by self-pairs).
    assert (ci["div_ci_low"], ci["div_ci_high"]) == pytest.approx((0.0, 0.0))


def brute_force(stats, counts):
    """The definition, one resample at a time: Sim pools the drawn identities' pairs; Div averages the
    cosines of drawn positions that hold different identities."""
    sims, divs = [], []
    for row in counts:
        drawn = np.repeat(np.arange(len(row)), row.astype(int))
        pairs = stats.pair_counts[drawn].sum()
        sims.append(stats.pair_sums[drawn].sum() / pairs if pairs else np.nan)
        cos = [stats.mean_cosines[i, j] for p, i in enumerate(drawn) for q, j in enumerate(drawn) if p != q and i != j]
        divs.append(1 - np.mean(cos) if cos else np.nan)
    return np.array(sims), np.array(divs)


def test_vectorised_intervals_match_the_definition_and_are_seeded():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(30, 5))
    identities = [f"id{i // 3}" for i in range(30)]     # 10 identities x 3 images
    stats = group_stats(vectors, identities)
    boot = Bootstrap(resamples=300, seed=5)
    sims, divs = brute_force(stats, boot.counts(len(stats.names)))
    expected = {"sim_ci_low": np.percentile(sims, 2.5), "sim_ci_high": np.percentile(sims, 97.5),
                "div_ci_low": np.percentile(divs, 2.5), "div_ci_high": np.percentile(divs, 97.5)}
    ci = sim_div_interval(stats, boot)
    assert ci == pytest.approx(expected)
    assert ci == sim_div_interval(stats, Bootstrap(resamples=300, seed=5))
    assert ci != sim_div_interval(stats, Bootstrap(resamples=300, seed=6))
    assert ci["sim_ci_low"] < stats.sim() < ci["sim_ci_high"] and ci["div_ci_low"] < stats.div() < ci["div_ci_high"]


def test_interval_separates_a_narrow_population_from_a_varied_one():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=16)
    # 24 codes that all draw nearly the same person vs 24 codes drawing unrelated people (3 images each).
    narrow = [centre + 0.1 * rng.normal(size=16) for _ in range(72)]
    varied = [v for _ in range(24) for v in [rng.normal(size=16)] * 3]
    labels = [str(i // 3) for i in range(72)]
    boot = Bootstrap(resamples=500, seed=0)
    a = sim_div_interval(group_stats(narrow, labels), boot)
    b = sim_div_interval(group_stats(varied, labels), boot)
    assert a["div_ci_high"] < 0.05 < 0.9 < b["div_ci_low"]
    assert sim_div(varied, labels).div == pytest.approx(1.0, abs=0.1)


def test_mean_interval_resamples_units_not_images():
    boot = Bootstrap(resamples=400, seed=0)
    # Each unit's images average 0.5: every resample of units has mean 0.5, though the images differ.
    assert mean_interval([1, 0, 1, 0], ["a", "a", "b", "b"], boot) == pytest.approx((0.5, 0.5))
    # One image per unit, two units 0 and 1: resample means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4.
    assert mean_interval([0.0, 1.0], ["a", "b"], boot) == pytest.approx((0.0, 1.0))
    assert mean_interval([0.3], ["a"], boot) == (None, None)
    assert mean_interval([0.3, 0.4], ["a", "b"], Bootstrap(resamples=0)) == (None, None)
    with pytest.raises(ValueError, match="2 values for 1"):
        mean_interval([0.1, 0.2], ["a"], boot)


def _matrix_div_interval(vectors: torch.Tensor, boot: Bootstrap):
    """The unit-per-image Div and its interval the way evaluate computed them before streaming: the full
    units x units cosine matrix (what `unit_div` must equal without forming it)."""
    stats = group_stats(vectors, [str(i) for i in range(len(vectors))])
    ci = sim_div_interval(stats, boot)
    return stats.div(), ci["div_ci_low"], ci["div_ci_high"]


def test_count_blocks_are_the_counts_cut_in_rows():
    boot = Bootstrap(resamples=25, seed=3)
    assert np.array_equal(np.concatenate(list(boot.count_blocks(11, 4))), boot.counts(11))
    assert boot.counts(11).shape == (25, 11) and Bootstrap(resamples=0).counts(4).shape == (0, 4)


def test_streamed_unit_div_equals_the_cosine_matrix(monkeypatch):
    """Div over images as units (the base model's), streamed in batches of 7 with resample blocks of 3 rows:
    the same value and interval as the n x n matrix, to float64 rounding."""
    from cocoins.eval.metrics import bootstrap as bootstrap_module
    from cocoins.simdiv import in_memory

    vectors = torch.randn(40, 6, generator=torch.Generator().manual_seed(0)) + 0.5
    boot = Bootstrap(resamples=50, seed=1)
    expected = _matrix_div_interval(vectors, boot)
    monkeypatch.setattr(bootstrap_module, "BLOCK_BYTES", 8 * 3 * (40 + 6))   # 3 resamples per block
    got = unit_div(in_memory(vectors, batch_rows=7), np.arange(40), [str(i) for i in range(40)], boot)
    assert got.units == 40
    assert (got.div, got.ci_low, got.ci_high) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_unit_div_of_units_with_several_rows_uses_their_mean():
    """Shared noise: one image rendered for several codes is one unit; its rows far apart in the table."""
    from cocoins.simdiv import in_memory

    vectors = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0.2, 0], [0, 0, 1.0], [0, 1.0, 0.1]])
    units = ["x", "y", "x", "z", "y"]
    boot = Bootstrap(resamples=30, seed=2)
    stats = group_stats(vectors, units)
    ci = sim_div_interval(stats, boot)
    got = unit_div(in_memory(vectors, batch_rows=2), np.arange(5), units, boot)
    assert got.units == 3
    assert (got.div, got.ci_low, got.ci_high) == pytest.approx((stats.div(), ci["div_ci_low"], ci["div_ci_high"]))
    assert unit_div(in_memory(vectors), np.arange(1), ["x"], boot).div is None
