"""`cocoins.tools.lever`: distances between x0 estimates that differ in one thing, on the tiny SDXL."""

import math

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from cocoins.data.shards import ShardReader
from cocoins.method.mapper import Mapper, MapperConfig
from cocoins.tools.lever import PAIRS, measure


def make_shards(tmp_path, identities):
    n = len(identities)
    g = torch.Generator().manual_seed(0)
    save_file({"latents": torch.randn(n, 4, 8, 8, generator=g), "masks": torch.ones(n, 1, 8, 8)},
              str(tmp_path / "shard-00000.safetensors"))
    nouns = ["man", "woman"] * (n // 2)
    pd.DataFrame({"image_id": [str(i) for i in range(n)], "shard": ["shard-00000.safetensors"] * n,
                  "row": range(n), "tagged1": [f"a smiling <subj1>{w}</subj1> {i}" for i, w in enumerate(nouns)],
                  "tagged2": [f"a <subj1>{w}</subj1>" for w in nouns], "identity": identities,
                  "original_height": [16] * n, "original_width": [16] * n, "crop_top": [0] * n,
                  "crop_left": [0] * n, "resolution": [16] * n}).to_parquet(tmp_path / "train.parquet")
    return ShardReader(tmp_path / "train.parquet", tmp_path)


def mapper(encoder, seed):
    torch.manual_seed(seed)
    return Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=encoder.pseudo_word_dims)).eval()


def test_each_pair_kind_measures_what_it_names(tmp_path, tiny_sdxl, tiny_encoder):
    reader = make_shards(tmp_path, [0, 1, 2, 3, 4, 5, 6, 7])
    f = mapper(tiny_encoder, 0)
    table = measure(tiny_sdxl, f, f, reader, samples=8, seed=0)
    assert list(table) == list(PAIRS) and all(len(v) == 4 for v in table.values())
    seen = [q for q in range(4) if not math.isnan(table["noise"][q])]
    assert seen, "no timestep quarter drawn"
    # The same f as "trained" and "untrained" gives the same code distances, bit for bit.
    assert [table["code"][q] for q in seen] == [table["code, f0"][q] for q in seen]
    for kind in ("noise", "code", "pseudo-word", "words"):
        assert all(table[kind][q] > 0 for q in seen), kind

    # An f whose output ignores z makes every code the same pseudo-word: zero code distance, exactly.
    constant = mapper(tiny_encoder, 1)
    last = constant.net[-1]
    with torch.no_grad():
        last.weight.zero_()
    table = measure(tiny_sdxl, constant, f, reader, samples=8, seed=0)
    assert all(table["code"][q] == 0.0 for q in seen) and all(table["code, f0"][q] > 0 for q in seen)


def test_needs_a_second_identity_of_the_same_class(tmp_path, tiny_sdxl, tiny_encoder):
    reader = make_shards(tmp_path, [0, 1, 0, 1])
    f = mapper(tiny_encoder, 0)
    with pytest.raises(ValueError, match="two identities per class word"):
        measure(tiny_sdxl, f, f, reader, samples=4, seed=0)
