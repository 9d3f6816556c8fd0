"""Pseudo-word spread (cocoins/method/word_spread.py): exact values on hand-built words, a collapsed mapper."""

import pytest
import torch

from cocoins.method.mapper import Mapper, MapperConfig, init_like_words, word_gains
from cocoins.method.word_spread import effective_rank, mean_pairwise_cosine, pseudo_word_spread


def test_effective_rank_counts_equal_directions():
    line = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [3.0, 0.0], [-3.0, 0.0]])
    assert effective_rank(line) == pytest.approx(1.0)
    square = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert effective_rank(square) == pytest.approx(2.0)
    assert effective_rank(torch.ones(5, 3)) == 0.0


def test_mean_pairwise_cosine_by_hand():
    # pairs: (e1, e2) 0, (e1, e1 + e2) 1/sqrt2, (e2, e1 + e2) 1/sqrt2 -> mean sqrt2 / 3
    words = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_pairwise_cosine(words) == pytest.approx(2 ** 0.5 / 3)
    with pytest.raises(ValueError, match="at least two"):
        mean_pairwise_cosine(words[:1])


def test_spread_tells_a_collapsed_mapper_from_a_spread_one():
    torch.manual_seed(0)
    spec = MapperConfig(code_dim=16, layers=8, hidden_dim=32, out_dims=(8, 12))
    collapsed = pseudo_word_spread(Mapper(spec), codes=256)   # nn.Linear's default init: one word for all codes
    spread_mapper = Mapper(MapperConfig(**{**spec.__dict__, "output_gain": word_gains((0.3, 0.3), (8, 12))}))
    init_like_words(spread_mapper, torch.Generator().manual_seed(0))
    spread = pseudo_word_spread(spread_mapper, codes=256)
    for key in ("text_encoder_1", "text_encoder_2"):
        assert collapsed[key]["mean_cosine"] > 0.99 and spread[key]["mean_cosine"] < 0.2
        assert collapsed[key]["rms_norm_about_mean"] < 0.01 * collapsed[key]["norm_of_mean"]
        assert spread[key]["rms_norm_about_mean"] == pytest.approx(0.3, rel=0.1)
        assert spread[key]["effective_rank"] > 2.0
    assert pseudo_word_spread(spread_mapper, codes=256) == spread   # seeded
