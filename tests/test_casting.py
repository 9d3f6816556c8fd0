"""Casting (cocoins.characters.casting): the first code far enough from every cast member."""

import numpy as np
import pytest
import torch

from cocoins.characters.casting import (cast_distinct, look_distance, look_from_embeddings, min_pairwise_distance,
                                      nearest_pairs)


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


# ---- on tiny models: looks rendered and read by a (random, tiny) trait classifier ---------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from front_models import write_identity, write_models

    root = write_models(tmp_path_factory.mktemp("casting"))
    write_identity(root / "identity")
    return root


def test_a_distinct_cast_is_farther_apart_than_plain_seeds():
    """Looks as random directions in 3-D, where close pairs are common: eight codes cast one after the other
    against the growing cast keep a larger smallest distance than eight consecutive seeds, over three libraries."""
    def look_of(z):
        return _unit(np.random.default_rng(int(z[0])).normal(size=3))

    for library_seed in range(3):
        first = 100 * library_seed
        plain = min_pairwise_distance([look_of(torch.tensor([float(first + k)])) for k in range(8)])
        cast, seed = {}, first
        for k in range(8):
            r = cast_distinct(lambda s: torch.tensor([float(s)]), look_of, cast, seed, 0.4, 200)
            assert r.reached and (k == 0 or r.nearest_distance >= 0.4)
            cast[f"c{k}"], seed = r.look, r.seed + 1
        assert min_pairwise_distance(list(cast.values())) >= 0.4 > plain, (library_seed, plain)


def test_cli_distinct_stores_the_distance_and_list_flags_look_alikes(models, tmp_path, capsys):
    from cocoins.characters.codes import code_from_seed, write_code_file
    from cocoins.characters.library import CharacterLibrary
    from cocoins.cli import main

    lib = tmp_path / "lib"
    common = ["--mapper", models / "mapper", "--library", lib]
    looks = ["--model", models / "model", "--identity", models / "identity", "--steps", 1, "--device", "cpu"]
    cli = lambda *a: main([str(x) for x in a])                                    # noqa: E731
    assert cli("character", "new", "ann", "--seed", 0, *common) == 0
    write_code_file(tmp_path / "ann.safetensors", code_from_seed(0, 8))
    assert cli("character", "new", "twin", "--from-code", tmp_path / "ann.safetensors", *common) == 0
    capsys.readouterr()
    assert cli("character", "new", "bo", "--distinct", "--seed", 5, "--min-distance", 0, *common, *looks) == 0
    out = capsys.readouterr().out
    record = CharacterLibrary(lib).get("bo").source
    assert record["code_seed"] == 5 and record["casting"]["tries"] == 1 and record["casting"]["metric"] == "traits"
    assert f"at {record['casting']['distance']:.3f}" in out and record["casting"]["nearest"] in ("ann", "twin")
    assert cli("character", "list", *common, *looks) == 0
    rows = {line.split("\t")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "nearest twin at 0.000\tLOOK-ALIKE" in rows["ann"] and "nearest ann at 0.000\tLOOK-ALIKE" in rows["twin"]
    assert f"nearest {record['casting']['nearest']} at {record['casting']['distance']:.3f}" in rows["bo"]
    assert "code seed 5 (distinct)" in rows["bo"]
    with pytest.raises(SystemExit, match="neither a trait classifier folder"):
        cli("character", "new", "cy", "--distinct", *common, *looks[:2], "--identity", tmp_path)
    assert cli("character", "list", "--no-distances", "--library", lib) == 0
    assert "nearest" not in capsys.readouterr().out
