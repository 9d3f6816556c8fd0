"""Mapper f (Eq. 3): shapes, layer count, the `words` init, diffusers save_pretrained / from_pretrained round trip, bad inputs."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cocoins.method.mapper import (LEGACY_WEIGHTS_NAME, SILU_SECOND_MOMENT, WEIGHTS_NAME, Mapper, MapperConfig,
                                   init_like_words, mapper_fingerprint, sample_codes, word_gains)
from cocoins.method.word_spread import effective_rank


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


def _spread(words: torch.Tensor) -> tuple[float, float, float]:
    """(RMS norm about the mean, norm of the mean, effective rank) of pseudo-words [N, d]."""
    centred = words - words.mean(dim=0)
    return (float(centred.pow(2).sum(dim=1).mean().sqrt()), float(words.mean(dim=0).norm()),
            effective_rank(words))


def test_silu_second_moment_is_the_gaussian_integral():
    h = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    density = torch.exp(-h ** 2 / 2) / math.sqrt(2 * math.pi)
    integral = float((torch.nn.functional.silu(h) ** 2 * density).sum() * (h[1] - h[0]))
    assert SILU_SECOND_MOMENT == pytest.approx(integral, abs=1e-7)


def test_init_like_words_spreads_codes_at_the_words_size():
    torch.manual_seed(0)
    spec = MapperConfig(code_dim=32, layers=8, hidden_dim=64, out_dims=(16, 24))
    codes = torch.randn(2000, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        default_rms, default_mean, _ = _spread(Mapper(spec)(codes)[:, :16])
    # nn.Linear's default: the code barely moves the word (what `mapper.init: pytorch` starts from).
    assert default_rms < 0.05 * default_mean
    gains = word_gains((0.3, 0.5), spec.out_dims)
    mapper = Mapper(dataclasses.replace(spec, output_gain=gains))
    init_like_words(mapper, torch.Generator().manual_seed(0))
    with torch.no_grad():
        words = mapper(codes)
    for part, target in ((words[:, :16], 0.3), (words[:, 16:], 0.5)):
        rms, mean_norm, rank = _spread(part)
        # Fresh codes, not the probe's: 2,000 samples put the RMS within a few percent of the target.
        assert rms == pytest.approx(target, rel=0.05)
        assert mean_norm < 0.1 * target
        assert rank > 0.3 * part.shape[1]   # orthogonal layers: 0.39-0.79 of the width measured here
    # The gain is fixed, not trained: the last layer itself works at unit scale (equalized learning rate).
    last = [m for m in mapper.net if isinstance(m, nn.Linear)][-1]
    assert float(last.weight.std()) > 0.5 / 64 ** 0.5
    assert [n for n, _ in mapper.named_parameters() if "gain" in n] == []
    again = Mapper(dataclasses.replace(spec, output_gain=gains))
    init_like_words(again, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(mapper.parameters(), again.parameters()))


def test_output_gain_round_trips_through_save_pretrained(tmp_path):
    spec = MapperConfig(code_dim=8, layers=2, hidden_dim=8, out_dims=(4, 6), output_gain=(0.5, 2.0))
    mapper = Mapper(spec)
    mapper.save_pretrained(tmp_path)
    loaded = Mapper.from_pretrained(tmp_path)
    assert loaded.spec == spec
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(z), mapper(z))
        plain = mapper.net(z)
    assert torch.equal(mapper(z)[:, :4], plain[:, :4] * 0.5) and torch.equal(mapper(z)[:, 4:], plain[:, 4:] * 2.0)


def test_word_gains_rejects_a_norm_per_encoder_mismatch():
    with pytest.raises(ValueError, match="one positive norm per text encoder"):
        word_gains((0.3,), (4, 4))
    with pytest.raises(ValueError, match="one positive norm per text encoder"):
        word_gains((0.3, 0.0), (4, 4))
    with pytest.raises(ValueError, match="one positive gain per text encoder"):
        MapperConfig(code_dim=8, layers=2, hidden_dim=8, out_dims=(4, 4), output_gain=(1.0,))


def test_output_norm_fixes_each_encoders_part_to_a_words_size(tmp_path):
    spec = MapperConfig(code_dim=8, layers=3, hidden_dim=16, out_dims=(4, 6), output_norm=(0.3, 0.5))
    torch.manual_seed(0)
    mapper = Mapper(spec)
    z = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        words = mapper(z)
        free = mapper.net(z)
    assert torch.allclose(words[:, :4].norm(dim=1), torch.full((20,), 0.3), atol=1e-6)
    assert torch.allclose(words[:, 4:].norm(dim=1), torch.full((20,), 0.5), atol=1e-6)
    # Only the length changes: each part keeps the direction the network chose.
    cos = torch.nn.functional.cosine_similarity(words[:, 4:], free[:, 4:], dim=1)
    assert torch.allclose(cos, torch.ones(20), atol=1e-6)
    mapper.save_pretrained(tmp_path)
    assert Mapper.from_pretrained(tmp_path).spec == spec
    with pytest.raises(ValueError, match="output_norm needs one positive norm"):
        MapperConfig(code_dim=8, layers=2, hidden_dim=8, out_dims=(4, 4), output_norm=(0.3, -1.0))


def test_odd_mapper_sends_opposite_codes_to_opposite_words_and_round_trips(tmp_path):
    spec = MapperConfig(code_dim=8, layers=3, hidden_dim=16, out_dims=(4, 6), output_norm=(0.3, 0.5), odd=True)
    torch.manual_seed(0)
    mapper = Mapper(spec)
    z = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        words, opposite = mapper(z), mapper(-z)
        g_plus, g_minus = mapper.net(z), mapper.net(-z)
    # f(-z) = -f(z) exactly (the two halves are the same subtraction, reversed), so over +-z the mean word is 0.
    assert torch.equal(opposite, -words)
    assert torch.allclose(torch.cat([words, opposite]).mean(dim=0), torch.zeros(10), atol=1e-7)   # fp32 sum order
    # It is the odd part of the MLP g (then scaled to the fixed norm): same direction as (g(z) - g(-z)) / 2.
    for part in (slice(0, 4), slice(4, 10)):   # each encoder's part is normalised on its own
        cos = torch.nn.functional.cosine_similarity(words[:, part], (g_plus - g_minus)[:, part] / 2, dim=1)
        assert torch.allclose(cos, torch.ones(50), atol=1e-6)
    mapper.save_pretrained(tmp_path)
    loaded = Mapper.from_pretrained(tmp_path)
    assert loaded.spec == spec and json.loads((tmp_path / "config.json").read_text())["odd"] is True
    with torch.no_grad():
        assert torch.equal(loaded(z), words)
    # Off by default, and a mapper saved before the option existed loads as not odd.
    assert MapperConfig().odd is False
    config = json.loads((tmp_path / "config.json").read_text())
    del config["odd"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert Mapper.from_pretrained(tmp_path).spec.odd is False
