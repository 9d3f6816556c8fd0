"""Mapper f (Eq. 3): shapes, layer count, save/load round trip, bad inputs."""

import pytest
import torch
from torch import nn

from cocoins.method.mapper import Mapper, MapperConfig, sample_codes


def test_eq3_shapes_and_layer_count():
    config = MapperConfig(code_dim=16, layers=8, hidden_dim=32, out_dims=(8, 12))
    f = Mapper(config)
    assert sum(isinstance(m, nn.Linear) for m in f.modules()) == 8
    w = f(torch.randn(5, 3, 16))
    assert w.shape == (5, 3, 20)
    with pytest.raises(ValueError, match="c = 16"):
        f(torch.randn(2, 15))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    f = Mapper(MapperConfig(code_dim=4, layers=3, hidden_dim=8, out_dims=(2, 3)))
    f.save(tmp_path / "m")
    g = Mapper.load(tmp_path / "m")
    assert g.config == f.config
    z = torch.randn(4, 4)
    assert torch.equal(f(z), g(z))
    with pytest.raises(FileNotFoundError, match="not a mapper dir"):
        Mapper.load(tmp_path / "missing")


def test_codes_are_reproducible_from_a_seed():
    a = sample_codes(torch.Generator().manual_seed(7), 2, 1, 256)
    b = sample_codes(torch.Generator().manual_seed(7), 2, 1, 256)
    assert a.shape == (2, 1, 256) and torch.equal(a, b)
