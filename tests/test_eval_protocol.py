"""The evaluation jobs: independent vs shared initial noise, and fewer codes per subject on a set."""

import pandas as pd
import pytest

from cocoins.eval.prompt_sets import identity_table, portrait_prompts, world_scene_prompts
from cocoins.eval.protocol import make_jobs, noise_seed

SCENES = {"sky blue": "under a blue sky", "park green": "in a green park"}


def _jobs(noise, per_subject=None):
    prompts = world_scene_prompts(("man", "woman"), SCENES)
    return make_jobs(identity_table(("man", "woman"), 3, seed=1), prompts, seeds_per_prompt=2, base_seed=100,
                     noise=noise, identities_per_subject=per_subject)


def test_seed_layout_by_hand():
    # shared: base + 1000 * prompt index + repeat; independent adds 1,000,000 * (identity row + 1).
    assert noise_seed(100, "shared", 4, 1, 1) == 1_101
    assert noise_seed(100, "independent", 0, 1, 1) == 1_001_101
    assert noise_seed(100, "independent", 4, 0, 0) == 5_000_100
    with pytest.raises(ValueError, match="eval.noise must be one of independent, shared"):
        noise_seed(0, "fixed", 0, 0, 0)
    with pytest.raises(ValueError, match="repeats"):
        noise_seed(0, "shared", 0, 0, 1_000)


def test_independent_noise_gives_every_job_its_own_seed():
    jobs = _jobs("independent")
    assert len(jobs) == 6 * 2 * 2 and jobs["noise_seed"].is_unique
    man0 = jobs[jobs.identity_id == "man-0"]["noise_seed"].tolist()
    man1 = jobs[jobs.identity_id == "man-1"]["noise_seed"].tolist()
    assert man0 == [1_000_100, 1_000_101, 1_001_100, 1_001_101]   # row 0: prompts 0-1 x repeats 0-1
    assert not set(man0) & set(man1)


def test_shared_noise_repeats_the_same_seeds_for_every_code():
    jobs = _jobs("shared")
    per_identity = jobs.groupby("identity_id")["noise_seed"].apply(list)
    assert all(seeds == [100, 101, 1_100, 1_101] for seeds in per_identity)   # the scheme before eval.noise


def test_fewer_codes_per_subject_keep_their_seeds():
    full, first = _jobs("independent"), _jobs("independent", per_subject=2)
    assert sorted(first["identity_id"].unique()) == ["man-0", "man-1", "woman-0", "woman-1"]
    kept = full[full["identity_id"].isin(first["identity_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, kept)


def test_portraits_jobs_only_use_the_subjects_own_prompt():
    jobs = make_jobs(identity_table(("man", "woman"), 1, seed=0), portrait_prompts(("man", "woman")), 1, 0)
    assert isinstance(jobs, pd.DataFrame)
    assert jobs.set_index("identity_id")["prompt_id"].to_dict() == {"man-0": "portrait-man", "woman-0": "portrait-woman"}
