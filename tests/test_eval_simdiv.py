"""Sim / Div of Section 4.2 on hand-made vectors, and the latent-space metric built on it."""

import math

import pytest
import torch

from cocoins.eval.metrics.latent import center_ellipse_mask, latent_metrics, subject_vectors
from cocoins.simdiv import mean_pairwise_cosine, sim_div

E1, E2, E3 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


def test_identical_embeddings_give_sim_one_and_orthogonal_identities_div_one():
    r = sim_div([E1, E1, E2, E2, E3, E3], ["a", "a", "b", "b", "c", "c"])
    assert r.sim == pytest.approx(1.0) and r.div == pytest.approx(1.0)
    assert (r.identities, r.vectors, r.reason) == (3, 6, "")


def test_one_identity_everywhere_gives_div_zero():
    r = sim_div([E1, [2.0, 0, 0], E1, E1], ["a", "a", "b", "b"])   # scale does not matter (cosine)
    assert r.sim == pytest.approx(1.0) and r.div == pytest.approx(0.0)


def test_known_values_by_hand():
    # identity a: two vectors 60 degrees apart -> Sim 0.5; its mean points at 30 degrees.
    a1, a2 = [1.0, 0.0], [0.5, math.sqrt(3) / 2]
    b = [0.0, 1.0]                       # identity b: one vector at 90 degrees (no pair: no Sim term)
    r = sim_div([a1, a2, b], ["a", "a", "b"])
    assert r.sim == pytest.approx(0.5)
    assert r.div == pytest.approx(1 - math.cos(math.radians(60)))   # mean of a at 30 deg vs b at 90 deg


def test_sim_pools_pairs_over_identities():
    # a: 3 identical vectors (6 ordered pairs, cos 1); b: 2 orthogonal ones (2 ordered pairs, cos 0).
    r = sim_div([E1, E1, E1, E2, E3], ["a", "a", "a", "b", "b"])
    assert r.sim == pytest.approx(6 / 8)


def test_missing_embeddings_are_dropped_and_nulls_say_why():
    r = sim_div([E1, None, E2, None], ["a", "a", "b", "b"])
    assert r.sim is None and r.div == pytest.approx(1.0) and r.vectors == 2
    assert "no identity has two embeddings" in r.reason
    r = sim_div([None, None], ["a", "b"])
    assert r.sim is None and r.div is None and "Div needs two identities" in r.reason
    with pytest.raises(ValueError, match="2 vectors for 3"):
        sim_div([E1, E2], ["a", "b", "c"])


def test_mean_pairwise_cosine():
    assert mean_pairwise_cosine(torch.tensor([E1, E2])) == pytest.approx(0.0)
    assert mean_pairwise_cosine(torch.tensor([E1, [1.0, 1.0, 0.0]])) == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(ValueError):
        mean_pairwise_cosine(torch.tensor([E1]))


def test_latent_metric_same_code_latents_are_consistent():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    same = latent_metrics(torch.cat([a, a, b, b]), ["x", "x", "y", "y"])[0]
    mixed = latent_metrics(torch.cat([a, b, a, b]), ["x", "x", "y", "y"])[0]
    assert same["latent_sim"] == pytest.approx(1.0) and same["latent_div"] > 0.5
    assert mixed["latent_sim"] < 0.5 and mixed["latent_div"] == pytest.approx(0.0, abs=1e-9)
    # Outside the subject ellipse nothing counts: changing a corner leaves the metric as it is.
    corner = a.clone()
    corner[..., 0, 0] += 100
    assert latent_metrics(torch.cat([a, corner, b, b]), ["x", "x", "y", "y"])[0]["latent_sim"] == pytest.approx(1.0)
    mask = center_ellipse_mask(8, 8)
    assert mask[0, 0, 0] == 0 and mask[0, 4, 4] == 1 and subject_vectors(a, mask).shape == (1, 4 * 64)
