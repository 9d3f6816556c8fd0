"""Mapper f (Eq. 3): shapes, layer count, diffusers save_pretrained / from_pretrained round trip, bad inputs."""

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cocoins.method.mapper import (LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, Mapper, MapperConfig, mapper_fingerprint,
                                   sample_codes)


def test_eq3_shapes_and_layer_count():
    config = MapperConfig(code_dim=16, layers=8, hidden_dim=32, out_dims=(8, 12))
    f = Mapper(config)
    assert sum(isinstance(m, nn.Linear) for m in f.modules()) == 8
    w = f(torch.randn(5, 3, 16))
    assert w.shape == (5, 3, 20)
    with pytest.raises(ValueError, match="c = 16"):
        f(torch.randn(2, 15))
    assert Mapper(code_dim=16, layers=8, hidden_dim=32, out_dims=[8, 12]).spec == config


def test_save_pretrained_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    f = Mapper(MapperConfig(code_dim=4, layers=3, hidden_dim=8, out_dims=(2, 3)))
    f.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", WEIGHTS_NAME]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["_class_name"] == "Mapper" and config["out_dims"] == [2, 3] and config["code_dim"] == 4
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: diffusers") and "c = 4" in card
    g = Mapper.from_pretrained(tmp_path / "m")
    assert g.spec == f.spec
    z = torch.randn(4, 4)
    assert torch.equal(f(z), g(z))
    with pytest.raises(FileNotFoundError, match="not a mapper dir"):
        Mapper.from_pretrained(tmp_path / "missing")


def test_the_legacy_hand_written_format_still_loads(tmp_path):
    torch.manual_seed(1)
    f = Mapper(MapperConfig(code_dim=4, layers=2, hidden_dim=8, out_dims=(2, 3)))
    (tmp_path / "old").mkdir()
    save_file({k: v.contiguous() for k, v in f.state_dict().items()}, str(tmp_path / "old" / LEGACY_WEIGHTS_NAME))
    (tmp_path / "old" / "config.json").write_text(json.dumps(
        {"code_dim": 4, "layers": 2, "hidden_dim": 8, "out_dims": [2, 3]}))
    g = Mapper.load(tmp_path / "old")
    z = torch.randn(3, 4)
    assert torch.equal(f(z), g(z))
    assert len(mapper_fingerprint(tmp_path / "old")) == 64


def test_codes_are_reproducible_from_a_seed():
    a = sample_codes(torch.Generator().manual_seed(7), 2, 1, 256)
    b = sample_codes(torch.Generator().manual_seed(7), 2, 1, 256)
    assert a.shape == (2, 1, 256) and torch.equal(a, b)
