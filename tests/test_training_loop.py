"""The training loop: only f trains, checkpoints resume bit for bit after a kill, NaN stops with context."""

import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from cocoins.data.shards import ShardReader
from cocoins.method.losses import LossConfig
from cocoins.method.mapper import MapperConfig
from cocoins.method.triplets import TripletConfig
from cocoins.sdxl.tiny import build_tiny_sdxl
from cocoins.sdxl.encode import PromptEncoder
from cocoins.training import loop as loop_module
from cocoins.training.loop import NonFiniteLossError, TrainConfig, train_mapper

CONFIG = TrainConfig(steps=4, batch_size=2, warmup_steps=1, checkpoint_every=2, seed=3)


@pytest.fixture()
def shards(tmp_path):
    g = torch.Generator().manual_seed(0)
    save_file({"latents": torch.randn(4, 4, 8, 8, generator=g), "masks": (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()},
              str(tmp_path / "shard-00000.safetensors"))
    pd.DataFrame({"image_id": list("abcd"), "shard": ["shard-00000.safetensors"] * 4, "row": range(4),
                  "tagged1": ["a <subj1>man</subj1> smiling", "a <subj1>woman</subj1>", "a <subj1>man</subj1>",
                              "the <subj1>person</subj1>"],
                  "tagged2": ["photo of a <subj1>man</subj1>", "the <subj1>woman</subj1> here",
                              "a bald <subj1>man</subj1>", "a <subj1>person</subj1> looks"],
                  "identity": [1, 2, 3, 4], "original_height": [16] * 4, "original_width": [16] * 4,
                  "crop_top": [0] * 4, "crop_left": [0] * 4, "resolution": [16] * 4}
                 ).to_parquet(tmp_path / "train.parquet")
    return ShardReader(tmp_path / "train.parquet", tmp_path)


def run(tmp_path, shards, name, config=CONFIG, loss=LossConfig(gamma=1e-3)):
    pipe = build_tiny_sdxl(0)
    encoder = PromptEncoder.from_pipeline(pipe)
    mapper_config = MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=encoder.pseudo_word_dims)
    return train_mapper(pipe, encoder, shards, mapper_config, loss, TripletConfig(), config,
                        tmp_path / name / "mapper", tmp_path / "ckpt", tmp_path / name / "live",
                        Accelerator(cpu=True))


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, shards, monkeypatch):
    run(tmp_path, shards, "straight")
    straight = load_file(str(tmp_path / "straight/mapper/mapper.safetensors"))
    curves = (tmp_path / "straight/live/plots/metrics/loss.tsv").read_text()
    (tmp_path / "ckpt").rename(tmp_path / "ckpt-straight")

    # Kill the run while it computes step 4, after the checkpoint of step 2.
    real_rows = ShardReader.rows
    calls = {"n": 0}

    def dying_rows(self, positions):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real_rows(self, positions)

    monkeypatch.setattr(ShardReader, "rows", dying_rows)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, shards, "resumed")
    monkeypatch.setattr(ShardReader, "rows", real_rows)
    assert not (tmp_path / "resumed/mapper").exists()
    # DVC deletes a stage's outputs before rerunning it: the curves must come back from the checkpoint.
    import shutil
    shutil.rmtree(tmp_path / "resumed/live")
    result = run(tmp_path, shards, "resumed")
    assert result.resumed_from == 2 and result.steps_run == 2
    resumed = load_file(str(tmp_path / "resumed/mapper/mapper.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert (tmp_path / "resumed/live/plots/metrics/loss.tsv").read_text() == curves


def test_checkpoints_of_other_settings_are_not_resumed(tmp_path, shards):
    run(tmp_path, shards, "a")
    result = run(tmp_path, shards, "b", loss=LossConfig(gamma=2e-3))
    assert result.resumed_from == 0 and result.steps_run == CONFIG.steps


def test_non_finite_loss_names_the_step(tmp_path, shards, monkeypatch):
    real = loop_module.CocoinsStep.__call__

    def poisoned(self, mapper, batch, step, total, generator):
        terms = real(self, mapper, batch, step, total, generator)
        if step == 2:
            terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setattr(loop_module.CocoinsStep, "__call__", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 2.*last finite values: \{'step': 1"):
        run(tmp_path, shards, "nan")
