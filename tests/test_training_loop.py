"""The training loop: only f trains, checkpoints resume bit for bit after a kill, NaN stops with context."""

import dataclasses
import math
import shutil
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from cocoins.data.shards import ShardReader
from cocoins.method.losses import LossConfig
from cocoins.method.mapper import WEIGHTS_NAME, Mapper, MapperConfig, word_embedding_rms, word_gains
from cocoins.method.triplets import TripletConfig
from cocoins.runtime import UserError
from cocoins.sdxl.tiny import build_tiny_sdxl
from cocoins.sdxl.encode import PromptEncoder
from cocoins.training import loop as loop_module
from cocoins.training.loop import NonFiniteLossError, TrainConfig, check_precision, tower_autocast, train_mapper

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


def run(tmp_path, shards, name, config=CONFIG, loss=LossConfig(gamma=1e-3), ckpt="ckpt", accelerator=None,
        towers=torch.float32):
    pipe = build_tiny_sdxl(0).to(dtype=towers)
    encoder = PromptEncoder.from_pipeline(pipe)
    mapper_config = MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=encoder.pseudo_word_dims)
    return train_mapper(pipe, encoder, shards, mapper_config, loss, TripletConfig(), config,
                        tmp_path / name / "mapper", tmp_path / ckpt, tmp_path / name / "live",
                        accelerator or Accelerator(cpu=True))


def weights(tmp_path, name) -> dict:
    return load_file(str(tmp_path / name / "mapper" / WEIGHTS_NAME))


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, shards, monkeypatch):
    run(tmp_path, shards, "straight")
    straight = load_file(str(tmp_path / f"straight/mapper/{WEIGHTS_NAME}"))
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
    resumed = load_file(str(tmp_path / f"resumed/mapper/{WEIGHTS_NAME}"))
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


def test_gradient_accumulation_equals_one_big_batch_and_resumes_across_layouts(tmp_path, shards):
    run(tmp_path, shards, "big")
    accum = dataclasses.replace(CONFIG, gradient_accumulation_steps=2)   # 2 micro-batches of 1
    run(tmp_path, shards, "micro", config=accum, ckpt="ckpt-micro")
    big, micro = weights(tmp_path, "big"), weights(tmp_path, "micro")
    assert any(not torch.equal(big[k], micro[k]) for k in big)              # really another computation ...
    # ... of the same steps. The weights moved about lr x steps = 4e-3 (a layout bug: by as much); the
    # rounding spread measured 1.5e-8 at 1 thread and 1.2e-7 at 2 (Intel AVX-512/AMX CPU, /tmp script of
    # issue 27): 1e-5 is 87x that and 400x under the movement.
    for k in big:
        torch.testing.assert_close(micro[k], big[k], rtol=0, atol=1e-5)
    curve = lambda name, term: [float(r.split("\t")[-1]) for r in
                                (tmp_path / name / f"live/plots/metrics/{term}.tsv").read_text().splitlines()[1:]]
    # d_pos compares two estimates that differ in noise and caption: no cancellation, float32 agrees to 1e-5.
    assert curve("micro", "d_pos") == pytest.approx(curve("big", "d_pos"), rel=1e-5)
    # The loss is a batch mean of lambda_neg / d_neg (Eq. 7), so the smallest per-sample d_neg rules it: here
    # about lambda_neg / (B * loss) = 2.5e-4 / (2 * 36.8) = 3.4e-6. d_neg is the mean square of a difference of
    # two x0 estimates of size ~1 that differ only through the pseudo-word, about sqrt(3.4e-6) = 1.8e-3, so a
    # last-bit difference of the estimates (float32 u = 6e-8, times the few roundings of differently blocked
    # kernels) is 2 u / 1.8e-3 = 7e-5 of d_neg. Measured: 1.15e-5 on an AVX-512 CPU, 1.3e-6 on an AVX2 one,
    # 6.3e-6 (1 thread) and 1.15e-5 (2 threads) on an Intel AVX-512/AMX one. The bound: 1e-3, 14x the estimate
    # and 87x the largest measured; a layout bug (other samples, another scale) moves the loss by O(1).
    assert curve("micro", "loss") == pytest.approx(curve("big", "loss"), rel=1e-3)
    # The layout is not part of the checkpoint fingerprint: a run checkpointed at step 2 with one layout
    # resumes with another.
    shutil.rmtree(tmp_path / "ckpt" / "step-0000004")
    result = run(tmp_path, shards, "relayout", config=accum)
    assert result.resumed_from == 2
    for k in big:   # the bound of the accumulation check above
        torch.testing.assert_close(weights(tmp_path, "relayout")[k], big[k], rtol=0, atol=1e-5)


def test_batch_must_divide_into_processes_and_micro_batches(tmp_path, shards):
    bad = dataclasses.replace(CONFIG, batch_size=3, gradient_accumulation_steps=2)
    with pytest.raises(UserError, match="train.batch_size 3 must divide into 1 process"):
        run(tmp_path, shards, "bad", config=bad)


def test_fp16_on_cpu_is_refused_with_the_fix():
    cpu = SimpleNamespace(device=torch.device("cpu"), mixed_precision="fp16")
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU.*use bf16 or fp32"):
        check_precision(dataclasses.replace(CONFIG, mixed_precision="fp16"), cpu)
    mismatch = SimpleNamespace(device=torch.device("cpu"), mixed_precision="no")
    with pytest.raises(UserError, match="Accelerator\\(mixed_precision='bf16'\\)"):
        check_precision(dataclasses.replace(CONFIG, mixed_precision="bf16"), mismatch)


@pytest.fixture()
def fresh_accelerator_state():
    """accelerate keeps one global state per process; a bf16 Accelerator needs a fresh one (and leaves one)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path, shards, fresh_accelerator_state):
    from accelerate.state import AcceleratorState

    config = dataclasses.replace(CONFIG, steps=2, mixed_precision="bf16", gradient_checkpointing=True)
    bf16 = run(tmp_path, shards, "bf16", config=config, accelerator=Accelerator(mixed_precision="bf16", cpu=True))
    AcceleratorState._reset_state(reset_partial_state=True)
    fp32 = run(tmp_path, shards, "fp32", config=dataclasses.replace(CONFIG, steps=2), ckpt="ckpt-fp32")
    assert bf16.steps_run == 2 and bf16.final["loss"] != fp32.final["loss"]   # autocast really ran in bf16
    # Loose: the DDIM estimate divides by sqrt(ᾱ_t) (down to 0.07), magnifying bf16 rounding of ε̂ in L_back.
    assert bf16.final["loss"] == pytest.approx(fp32.final["loss"], rel=0.25)
    trained = weights(tmp_path, "bf16")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in trained.values())
    # The bf16 steps moved every weight tensor (Adam at lr 1e-4: about 1e-4 a step), as the fp32 run did.
    torch.manual_seed(CONFIG.seed)
    init = Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=(32, 32))).state_dict()
    assert min((trained[k] - init[k]).abs().max().item() for k in init) > 5e-5


def test_half_towers_train_without_autocast_and_a_mismatch_names_the_fix(tmp_path, shards, fresh_accelerator_state):
    """stages/train.py on CUDA: towers stored in bf16, the Accelerator's autocast off (`tower_autocast`)."""
    from accelerate.state import AcceleratorState

    config = dataclasses.replace(CONFIG, steps=2, mixed_precision="bf16")
    half = run(tmp_path, shards, "half", config=config, towers=torch.bfloat16,
               accelerator=Accelerator(mixed_precision="bf16", cpu=True,
                                       kwargs_handlers=[tower_autocast(torch.bfloat16)]))
    AcceleratorState._reset_state(reset_partial_state=True)
    fp32 = run(tmp_path, shards, "fp32", config=dataclasses.replace(CONFIG, steps=2), ckpt="ckpt-fp32")
    assert half.steps_run == 2 and half.final["loss"] != fp32.final["loss"]
    assert half.final["loss"] == pytest.approx(fp32.final["loss"], rel=0.25)   # as the autocast test's bound
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights(tmp_path, "half").values())
    assert tower_autocast(torch.float32).enabled and not tower_autocast(torch.float16).enabled
    autocasting = SimpleNamespace(device=torch.device("cpu"), mixed_precision="bf16", autocast_handler=None)
    with pytest.raises(UserError, match="stored in bfloat16 but the Accelerator's autocast is on.*tower_autocast"):
        check_precision(config, autocasting, torch.bfloat16)
    check_precision(config, autocasting, torch.float32)   # fp32 towers: autocast lowers them, as it should


def test_words_init_and_fixed_norm_reach_the_saved_mapper(tmp_path, shards):
    """`mapper.init: words` and `mapper.fixed_norm` are the trained mapper's, saved in its config: evaluation
    and the CLI load the same gain and norm that training used, and every pseudo-word has the words' size."""
    config = dataclasses.replace(CONFIG, mapper_init="words", mapper_fixed_norm=True)
    result = run(tmp_path, shards, "words", config=config)
    pipe = build_tiny_sdxl(0)
    encoder = PromptEncoder.from_pipeline(pipe)
    word_rms = word_embedding_rms(encoder.tokenizers, encoder.text_encoders, config.mapper_init_words)
    saved = Mapper.from_pretrained(tmp_path / "words" / "mapper")
    assert saved.spec.output_norm == pytest.approx(word_rms)
    assert saved.spec.output_gain == pytest.approx(word_gains(word_rms, encoder.pseudo_word_dims))
    with torch.no_grad():
        words = saved(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)))
    d1 = encoder.pseudo_word_dims[0]
    assert torch.allclose(words[:, :d1].norm(dim=1), torch.full((5,), word_rms[0]), rtol=1e-5)
    assert torch.allclose(words[:, d1:].norm(dim=1), torch.full((5,), word_rms[1]), rtol=1e-5)
    assert result.steps_run == CONFIG.steps
    with pytest.raises(UserError, match="mapper.init 'xavier': use pytorch or words"):
        run(tmp_path, shards, "bad", config=dataclasses.replace(CONFIG, mapper_init="xavier"))
