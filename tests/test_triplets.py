"""Triplet construction of Eqs. 5-6 and Table 5's switches."""

import torch

from cocoins.method.triplets import (TripletConfig, add_noise, triplet_latents, triplet_prompts,
                                     triplet_pseudo_words)


def test_eq5_prompts_and_codes():
    a, p, n = triplet_prompts(["c1a", "c1b"], ["c2a", "c2b"], TripletConfig())
    assert (a, p, n) == (["c1a", "c1b"], ["c2a", "c2b"], ["c1a", "c1b"])
    _, p_same, _ = triplet_prompts(["c1a"], ["c2a"], TripletConfig(same_prompt=True))
    assert p_same == ["c1a"]
    w1, w2 = torch.zeros(2, 1, 3), torch.ones(2, 1, 3)
    pw = triplet_pseudo_words(w1, w2)
    assert torch.equal(pw[:4], torch.zeros(4, 1, 3)) and torch.equal(pw[4:], torch.ones(2, 1, 3))


def test_eq6_noise_sharing():
    torch.manual_seed(0)
    x, e1, e2 = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    alpha = torch.tensor([0.9, 0.5, 0.1])
    star, plus, minus = triplet_latents(x, e1, e2, alpha, TripletConfig())
    assert torch.equal(star, minus) and not torch.equal(star, plus)
    torch.testing.assert_close(plus, add_noise(x, e2, alpha))
    star, plus, _ = triplet_latents(x, e1, e2, alpha, TripletConfig(same_noise=True))
    assert torch.equal(star, plus)


def test_add_noise_matches_eq1():
    x, eps = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 2.0)
    assert add_noise(x, eps, torch.tensor([0.64])).item() == 0.8 * 1 + 0.6 * 2
