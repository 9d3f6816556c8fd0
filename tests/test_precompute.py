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


def test_only_the_vae_is_loaded_and_matches_the_pipelines(tmp_path, monkeypatch, capsys):
    """No UNet, no text encoders: loading the whole SDXL fails here, and precompute still runs on the VAE alone."""
    from diffusers import StableDiffusionXLPipeline

    from cocoins.sdxl.load import load_pipeline

    prepare(tmp_path, monkeypatch)
    pipe_vae = load_pipeline("models/base").vae
    vae = load_vae("models/base", torch.device("cpu"), torch.float32, subfolder="vae")
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), pipe_vae.state_dict().values()))

    def refuse(*args, **kwargs):
        raise AssertionError("precompute loaded the whole pipeline")
    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", refuse)
    run("precompute")
    assert "[precompute] vae: models/base (vae/)" in capsys.readouterr().out


def test_fp16_needs_a_vae_that_survives_it(tmp_path, capsys):
    """SDXL's VAE says force_upcast (NaN in fp16): fp16 becomes fp32 with the fix named; the fp16-fix VAE stays fp16."""
    from cocoins.data.shards import FP16_FIX, vae_dtype
    from cocoins.sdxl.tiny import build_tiny_sdxl

    vae = build_tiny_sdxl(0).vae
    assert vae.config.force_upcast                        # as SDXL's own VAE config
    vae.save_pretrained(tmp_path / "stock")
    assert vae_dtype(tmp_path / "stock", torch.float16) == torch.float32
    assert f"For fp16 set precompute.vae: {FP16_FIX}" in capsys.readouterr().out
    assert vae_dtype(tmp_path / "stock", torch.bfloat16) == torch.bfloat16   # fp32's range: no upcast
    vae.register_to_config(force_upcast=False)            # as madebyollin/sdxl-vae-fp16-fix's config
    vae.save_pretrained(tmp_path / "fixed")
    assert vae_dtype(tmp_path / "fixed", torch.float16) == torch.float16
    assert load_vae(tmp_path / "stock", torch.device("cpu"), torch.float16).dtype == torch.float32


def test_nan_latents_stop_the_stage_naming_the_images(tmp_path, monkeypatch):
    import cocoins.data.shards as shards
    from cocoins.runtime import UserError

    prepare(tmp_path, monkeypatch)
    real = shards.encode_latents

    def second_is_nan(vae, pixels):
        latents = real(vae, pixels)
        latents[1, 0, 0, 0] = float("nan")     # what an fp16 overflow in the stock SDXL VAE gives
        return latents
    monkeypatch.setattr(shards, "encode_latents", second_is_nan)
    with pytest.raises(UserError) as err:
        run("precompute")
    message = str(err.value)
    train = __import__("pandas").read_parquet("data/tagged.parquet")
    second = sorted(train.loc[train["kept"], "image_id"])[1]
    assert message.startswith(f"precompute: the VAE gave NaN/inf latents in float32 for 1 image(s) ({second});")
    assert "precompute.vae: madebyollin/sdxl-vae-fp16-fix" in message and "precompute.dtype: bf16 or fp32" in message
    assert not list(Path("data/work/precompute").glob("work-*")) and not Path("data/train.parquet").exists()


def test_a_subject_past_the_text_window_is_a_recorded_skip(tmp_path, monkeypatch, capsys):
    """The rule is training's own (PromptEncoder.tokenize with the pseudo-words inserted)."""
    import pandas as pd

    from cocoins.data.window import load_tokenizers
    from cocoins.sdxl.encode import PromptEncoder, SubjectTruncatedError

    prepare(tmp_path, monkeypatch)
    tagged = pd.read_parquet("data/tagged.parquet")
    kept = sorted(tagged.loc[tagged["kept"], "image_id"])
    late = "A photo taken " + "on a very long and sunny afternoon " * 10 + "of a <subj1>man</subj1>."
    early = "A <subj1>man</subj1> photographed " + "on a very long and sunny afternoon " * 10 + "."
    tagged.loc[tagged["image_id"] == kept[0], "tagged2"] = late
    tagged.loc[tagged["image_id"] == kept[1], "tagged1"] = early       # only text after the subject is cut
    tagged.to_parquet("data/tagged.parquet")
    encoder = PromptEncoder(*load_tokenizers("models/base"), text_encoder=None, text_encoder_2=None)
    with pytest.raises(SubjectTruncatedError):
        encoder.tokenize([late], insert=True)         # what training would raise, hours in
    encoder.tokenize([early], insert=True)
    capsys.readouterr()
    run("precompute")
    index = pd.read_parquet("data/train.parquet")
    assert kept[0] not in set(index["image_id"]) and kept[1] in set(index["image_id"]) and len(index) == 7
    assert "[precompute]   skipped 1: subject tag past the 77-token text window (<subj1>)" in capsys.readouterr().out
