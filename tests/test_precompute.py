"""precompute: restartable VAE latent shards + the Parquet index, on the tiny world and the tiny SDXL."""

import json
from pathlib import Path

import pytest
import torch

from cocoins.data.shards import ShardReader, load_vae
from cocoins.data.tags import parse_tagged

from test_data_stages import run, write_params
from test_workdir import Killed

PRE = {"resolution": 16, "shard_size": 3, "batch_size": 2, "device": "cpu"}
OUTPUTS = ["data/train.parquet", *(f"data/latents/shard-0000{k}.safetensors" for k in range(3))]


def prepare(root, monkeypatch, **precompute):
    monkeypatch.chdir(root)
    write_params(root, mask={"face_counter": "annotation"}, models={"sdxl": "tiny", "seed": 0},
                 precompute={**PRE, **precompute})
    for name in ("ingest", "caption", "tag", "mask", "base"):
        run(name)


def test_shards_index_and_restart(tmp_path, monkeypatch, capsys):
    import cocoins.data.shards as shards

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for d in (clean, killed):
        d.mkdir()
    prepare(clean, monkeypatch)
    run("precompute")
    expected = {p: Path(p).read_bytes() for p in OUTPUTS}
    reader = ShardReader("data/train.parquet", "data/latents")
    index = reader.index
    assert list(index.columns) == ["image_id", "shard", "row", "tagged1", "tagged2", "spans1", "spans2", "identity",
                                   "original_height", "original_width", "crop_top", "crop_left", "resolution",
                                   "mask_fraction"]
    assert len(index) == 8 and index["shard"].value_counts().sort_index().tolist() == [3, 3, 2]
    assert index["row"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    for tagged, spans in zip(index["tagged1"], index["spans1"]):
        assert json.loads(spans) == [[s.index, s.start, s.end] for s in parse_tagged(tagged).spans] != []
    batch = reader.rows([0, 4, 7])
    assert batch["latents"].shape == (3, 4, 8, 8) and batch["masks"].shape == (3, 1, 8, 8)  # tiny VAE: /2
    assert "[precompute] shards: 3" in capsys.readouterr().out

    prepare(killed, monkeypatch)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        # encode_shard is looked up by the stage at import: patch the module it imports from.
        patch.setattr(shards, "encode_shard", _dies_after(shards.encode_shard, 1))
        run("precompute")
    assert not Path("data/train.parquet").exists() and len(list(Path("data/work/precompute").glob("work-*"))) == 1
    capsys.readouterr()
    run("precompute")
    assert "processed now / reused from data/work/precompute: 5 / 3" in capsys.readouterr().out
    assert {p: Path(p).read_bytes() for p in OUTPUTS} == expected


def _dies_after(fn, n):
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) > n:
            raise Killed()
        return fn(*args, **kwargs)
    return wrapped


def test_vae_param_loads_another_vae(tmp_path, monkeypatch, capsys):
    prepare(tmp_path, monkeypatch, vae="models/base", dtype="fp16")
    vae = load_vae("models/base", torch.device("cpu"), torch.float32)   # a diffusers dir: its vae/ subfolder
    assert type(vae).__name__ == "AutoencoderKL"
    run("precompute")
    out = capsys.readouterr().out
    assert "[precompute] vae: models/base" in out and "[precompute] dtype: float32" in out  # CPU: fp32
    with pytest.raises(FileNotFoundError, match="precompute.vae"):
        load_vae(str(tmp_path / "nope"), torch.device("cpu"), torch.float32)


def test_a_subject_mask_empty_at_latent_resolution_is_a_recorded_skip(tmp_path, monkeypatch, capsys):
    import pandas as pd
    from PIL import Image

    prepare(tmp_path, monkeypatch)
    subjects = pd.read_parquet("data/subjects.parquet")
    first = subjects[subjects["kept"]].iloc[0]
    with Image.open(first.mask_path) as m:
        Image.new("L", m.size, 0).save(first.mask_path)   # the subject vanished from its mask
    capsys.readouterr()
    run("precompute")
    index = pd.read_parquet("data/train.parquet")
    assert first.image_id not in set(index["image_id"]) and len(index) == 7 and (index["mask_fraction"] > 0).all()
    assert "[precompute]   skipped 1: subject mask empty at latent resolution" in capsys.readouterr().out
