"""benchmarks/stage_flops.py at tiny batches: every stage's step runs through the library and is counted."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow   # five steps of the stages' real functions, counted and timed: about a minute on 2 busy cores
def test_tiny_run_counts_every_heavy_stage_and_rates_whole_stages(tmp_path):
    import stage_flops

    times = tmp_path / "times.json"
    times.write_text(json.dumps({"stages": {"base": 100.0, "identity": 50.0, "ingest": 3.0}}))
    result = stage_flops.main(["--tiny", "--threads", "1", "--steps", "1", "--repeats", "1",
                               "--stage-times", str(times), "--out", str(tmp_path), "--profile", "3"])
    steps = {r["step"]: r for r in result["steps"]}
    assert set(steps) == {"base: VAE step", "base: UNet + text encoders step", "identity: trait classifier step",
                          "train: CoCoIns step", "evaluate: one rendering batch"}
    for r in steps.values():
        assert r["threads"] == 1 and r["gflop_per_step"] > 0 and r["seconds_per_step"] > 0
        assert r["gflops"] == pytest.approx(r["gflop_per_step"] / r["seconds_per_step"])
        assert r["of_peak"] == pytest.approx(r["gflops"] / result["matmul_peak_gflops"]["1"])
    # A CoCoIns step runs the UNet on 5 batches (2 references without gradients, 3 with: forward + backward)
    # and the text encoders on the triplet prompts: more than a base step, whose UNet sees one batch.
    assert steps["train: CoCoIns step"]["gflop_per_step"] > steps["base: UNet + text encoders step"]["gflop_per_step"]
    # Whole stages: steps x FLOPs per step over the given wall time; a stage with no counted step is left out.
    base = sum(steps[k]["gflop_per_step"] * steps[k]["stage_steps"]
               for k in ("base: VAE step", "base: UNet + text encoders step"))
    assert set(result["stages"]) == {"base", "identity"}
    assert result["stages"]["base"]["gflops"] == pytest.approx(base / 100.0)
    assert all(len(r["top_ops"]) == 3 and 0 < r["top_ops"][0]["share"] <= 1 for r in steps.values())
    md = (tmp_path / "stage_flops-tiny.md").read_text()
    assert "| base: VAE step | 1 |" in md and "| identity | 50 |" in md
    assert json.loads((tmp_path / "stage_flops-tiny.json").read_text())["steps"] == result["steps"]


def test_a_shorter_prompt_window_counts_fewer_flops_per_base_step(tmp_path):
    import stage_flops

    def base_unet_gflop(window: int) -> float:
        result = stage_flops.main(["--tiny", "--threads", "1", "--steps", "1", "--repeats", "1", "--stages", "base",
                                   "--text-context", str(window), "--out", str(tmp_path / str(window))])
        assert {r["stage"] for r in result["steps"]} == {"base"}
        return {r["step"]: r for r in result["steps"]}["base: UNet + text encoders step"]["gflop_per_step"]

    # The text encoders and the UNet's cross-attention work on every position of the window, padding included.
    assert base_unet_gflop(20) < 0.9 * base_unet_gflop(40)   # measured 0.60 against 0.72 GFLOP at batch 4


def test_unknown_stages_are_refused():
    import stage_flops

    with pytest.raises(SystemExit):
        stage_flops.main(["--tiny", "--stages", "base,sampling"])
