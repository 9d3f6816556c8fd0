"""benchmarks/pipeline.py: a cold run's dvc.lock is compared with the committed one stage by stage."""

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from pipeline import export_revision, lock_differences, ratios, stage_names  # noqa: E402


def test_lock_order_does_not_count_but_any_changed_entry_does():
    committed = (ROOT / "dvc.lock").read_text()
    lock = yaml.safe_load(committed)
    stages = lock["stages"]
    reordered = yaml.safe_dump({**lock, "stages": dict(reversed(list(stages.items())))}, sort_keys=False)
    assert reordered != committed and lock_differences(reordered, committed) == []
    first = next(iter(stages))
    changed = {**stages, first: {**stages[first], "cmd": stages[first]["cmd"] + " --other"}}
    missing = {k: v for k, v in stages.items() if k != first}
    assert lock_differences(yaml.safe_dump({**lock, "stages": changed}), committed) == [first]
    assert lock_differences(yaml.safe_dump({**lock, "stages": missing}), committed) == [first]


def test_per_stage_order_is_upstream_first():
    """Each stage's dependencies on other stages' outputs come from stages listed before it in dvc.yaml."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    names = stage_names(ROOT)
    assert names == list(spec)
    made_by = {str(out if isinstance(out, str) else next(iter(out))): name
               for name, stage in spec.items() for group in ("outs", "metrics", "plots")
               for out in stage.get(group, [])}
    links = [(name, dep, made_by[dep]) for name in names for dep in spec[name].get("deps", []) if dep in made_by]
    assert len(links) >= len(names) - 1   # every stage but ingest reads another's output
    for name, dep, producer in links:
        assert names.index(producer) < names.index(name), (name, dep, producer)


def test_ratios_are_new_over_old_per_stage_and_for_the_stages_both_ran():
    new = {"base": 300.0, "train": 50.0, "added": 10.0}
    old = {"base": 600.0, "train": 40.0, "removed": 5.0}
    assert ratios(new, old) == {"base": 0.5, "train": 1.25, "total": 0.547}   # 350 / 640
    with pytest.raises(ValueError, match="share no timed stage"):
        ratios({"added": 1.0}, {"removed": 1.0})


def test_a_revision_is_exported_without_its_lock(tmp_path):
    export_revision("HEAD", tmp_path)
    assert (tmp_path / "dvc.yaml").is_file() and (tmp_path / "params.yaml").is_file()
    assert not (tmp_path / "dvc.lock").exists()
