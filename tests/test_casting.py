"""Casting (cocoins.characters.casting): the first code far enough from every cast member."""

import numpy as np
import pytest
import torch

from cocoins.characters.casting import cast_distinct, look_from_embeddings, min_pairwise_distance, nearest_pairs


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def test_keeps_the_first_far_enough_code():
    looks = {0: _unit([1, 0]), 1: _unit([1, 0.1]), 2: _unit([0, 1]), 3: _unit([-1, 0])}
    cast = {"ann": _unit([1, 0])}
    r = cast_distinct(lambda s: torch.full((2,), float(s)), lambda z: looks[int(z[0])], cast, 0, 0.5, 4)
    assert (r.seed, r.tries, r.reached, r.nearest_name) == (2, 3, True, "ann")
    assert r.nearest_distance == pytest.approx(1.0)


def test_keeps_the_farthest_when_none_reaches():
    looks = {0: _unit([1, 0.05]), 1: _unit([1, 0.3]), 2: _unit([1, 0.1])}
    r = cast_distinct(lambda s: torch.zeros(2) + s, lambda z: looks[int(z[0])], {"a": _unit([1, 0])}, 0, 0.9, 3)
    assert (r.seed, r.reached, r.tries) == (1, False, 3)


def test_empty_cast_takes_the_first_and_pairs():
    r = cast_distinct(lambda s: torch.zeros(2), lambda z: _unit([1, 0]), {}, 7, 0.5, 3)
    assert (r.seed, r.nearest_distance, r.reached) == (7, None, True)
    cast = {"a": _unit([1, 0]), "b": _unit([0, 1]), "c": _unit([1, 0.01])}
    pairs = nearest_pairs(cast)
    assert pairs["a"][0] == "c" and pairs["b"][0] in ("a", "c")
    assert min_pairwise_distance(list(cast.values())) == pytest.approx(pairs["a"][1])
    assert look_from_embeddings([None, None]) is None
    assert np.allclose(look_from_embeddings([np.array([2.0, 0]), None]), [1, 0])
