"""The full-scale profile and what makes it run on 1 to 8 GPUs: the profile tool, the launchers, the batch
layout and the train stage's memory rule."""

from pathlib import Path

import pytest
import yaml

from cocoins.config import ParamsError, load_params, parse_params
from cocoins.runtime import UserError
from cocoins.tools import profile as profile_tool
from cocoins.training.loop import TrainConfig, micro_batch_layout
from cocoins.training.preflight import launched_processes, step_memory_gib, train_problems


ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "full-scale.yaml"


def full_scale_params(**changes):
    raw = profile_tool.merge(yaml.safe_load((ROOT / "params.yaml").read_text()), profile_tool.read_profile(PROFILE))
    return parse_params(profile_tool.merge(raw, changes), ROOT, check_paths=False)


def test_shipped_profile_is_valid_and_switches_off_the_mini_world_departures():
    p = profile_tool.check(PROFILE, ROOT / "params.yaml")
    assert (p.mapper.init, p.mapper.fixed_norm, p.mapper.odd) == ("pytorch", False, False)
    # Table 7 (Appendix B): the method's values at full scale.
    assert (p.mapper.code_dim, p.mapper.layers, p.loss.lambda_con, p.loss.lambda_back, p.loss.gamma, p.loss.beta,
            p.train.steps, p.train.batch_size, p.train.lr, p.train.warmup_steps, p.train.weight_decay) == \
        (256, 8, 1.0, 30.0, 1e-5, 2.0, 5000, 128, 1e-4, 500, 0.2)
    assert (p.precompute.resolution, p.eval.resolution, p.models.sdxl) == \
        (1024, 1024, "stabilityai/stable-diffusion-xl-base-1.0")
    assert p.launch.train.startswith("accelerate launch") and p.eval.strict
    assert set(profile_tool.placeholders(profile_tool.read_profile(PROFILE))) == {
        "data.root", "mask.sam2_checkpoint", "eval.arcface_dir", "eval.dreamsim_cache", "eval.fid_weights"}


def test_apply_sets_keys_keeps_comments_and_refuses_placeholders(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    with pytest.raises(ParamsError, match="fill in the paths of data.root"):
        profile_tool.apply(PROFILE, params)
    assert params.read_text() == (ROOT / "params.yaml").read_text()   # nothing written on refusal

    (tmp_path / "celeba").mkdir()
    done = profile_tool.apply_mapping({"data": {"source": "celeba", "root": str(tmp_path / "celeba")},
                                       "prompts": {"backend": "builtin"},
                                       "train": {"micro_batch_size": 16}, "launch": {"train": "accelerate launch"}},
                                      params)
    assert ("train.micro_batch_size", None, 16) in done
    text = params.read_text()
    assert "# synthetic | celeba | folder" in text and "  split: null" in text   # comments and nulls kept
    p = load_params(params)
    assert (p.data.source, p.train.micro_batch_size, p.launch.train) == ("celeba", 16, "accelerate launch")
    unchanged = [line for line in (ROOT / "params.yaml").read_text().splitlines() if "mini" in line]
    assert all(line in text for line in unchanged)


def test_bad_profile_and_bad_launcher_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2]\n")
    with pytest.raises(ParamsError, match="must map params groups"):
        profile_tool.read_profile(bad)
    with pytest.raises(ParamsError, match="launch.train = 'torchrun x'"):
        full_scale_params(launch={"train": "torchrun x"})
    assert profile_tool.main(["check", str(bad), "--params", str(ROOT / "params.yaml")]) == 1


@pytest.mark.parametrize("world, micro, accum", [(1, 16, 8), (2, 16, 4), (4, 16, 2), (8, 16, 1)])
def test_micro_batch_size_keeps_the_global_batch_on_any_gpu_count(world, micro, accum):
    assert micro_batch_layout(TrainConfig(batch_size=128, micro_batch_size=16), world) == (micro, accum)


def test_micro_batch_that_does_not_divide_is_refused_and_old_layout_still_works():
    with pytest.raises(UserError, match="must divide into 3 process"):
        micro_batch_layout(TrainConfig(batch_size=128, micro_batch_size=16), 3)
    assert micro_batch_layout(TrainConfig(batch_size=128, gradient_accumulation_steps=4), 4) == (8, 4)


def test_launched_processes_reads_the_launcher():
    assert launched_processes("python", 8) == 1
    assert launched_processes("accelerate launch", 4) == 4
    assert launched_processes("accelerate launch", 0) == 1
    assert launched_processes("accelerate launch --num_processes 2 --multi_gpu", 8) == 2
    assert launched_processes("accelerate launch --num_processes=3", 8) == 3


def test_memory_rule_matches_the_h200_measurements_and_names_the_fix():
    # benchmarks/results/gpu_suite-h200.md: 1024 px, 4 samples without checkpointing 83.4 GiB; 16 with 46.6 GiB.
    assert step_memory_gib(4, 1024, False) == pytest.approx(83.4, abs=2.0)
    assert step_memory_gib(16, 1024, True) == pytest.approx(46.6, abs=2.0)
    assert step_memory_gib(8, 512, False) == pytest.approx(47.2, abs=2.0)   # activations scale with the area
    p = full_scale_params(models={"sdxl": "/nonexistent/sdxl"})
    problems = train_problems(p, world=4, gpu_gib=80.0)
    assert problems == ["models.sdxl: /nonexistent/sdxl does not exist; set it to a local model directory or a hub id"]
    # The profile's 16 samples per pass with checkpointing fit 80 GB; without checkpointing they do not.
    tight = full_scale_params(models={"sdxl": "/nonexistent/sdxl"}, train={"gradient_checkpointing": False})
    line = train_problems(tight, world=4, gpu_gib=80.0)[1]
    assert "need about 316 GiB" in line and "set train.gradient_checkpointing: true" in line
    small = full_scale_params(models={"sdxl": "/nonexistent/sdxl"}, train={"micro_batch_size": 32})
    assert "micro_batch_size to 26 or less" in train_problems(small, world=4, gpu_gib=80.0)[1]
    assert "does not divide into 3 process(es)" in train_problems(p, world=3, gpu_gib=80.0)[1]


def test_the_embedded_default_needs_nothing():
    assert train_problems(load_params(ROOT / "params.yaml"), world=1, gpu_gib=None) == []
