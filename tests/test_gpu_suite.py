"""benchmarks/gpu_suite.py at tiny sizes on the CPU: every part runs and the JSON / Markdown carry measured
numbers, so the GPU suite cannot rot between lent GPUs."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module   # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("sam2") is None, reason="sam2 not installed (data prep's mask stage)")
def test_tiny_run_writes_measured_json_and_markdown(tmp_path):
    suite = load_suite()
    threads = torch.get_num_threads()
    try:
        suite.main(["--tiny", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["mode"] == "tiny configs, CPU" and report["peaks"]["measured_matmul_tflops"] > 0
    parts = report["parts"]
    assert not any("error" in part for part in parts.values() if isinstance(part, dict)), parts
    timed = [r for r in parts["train"]["rows"] if "step_s" in r]
    assert len(timed) == len(suite.TINY_TRAIN)
    for row in timed:
        assert row["samples_per_s"] > 0 and row["model_tflop_per_step"] > 0 and row["mfu_vs_measured_matmul"] > 0
        assert row["mfu"] is None   # no datasheet peak for a CPU
    checkpointed = next(r for r in timed if r["checkpointing"])
    assert checkpointed["hardware_tflop_per_step"] > checkpointed["model_tflop_per_step"]   # recomputed forwards
    assert parts["train"]["rows"][-1]["compile"] and "skipped" in parts["train"]["rows"][-1]
    prof = parts["profile"]
    assert 0 < prof["busy_ms_per_step"] and 0 < prof["busy_share_of_wall"] <= 1.0 and len(prof["top"]) > 3
    assert abs(sum(prof["share_by_kind"].values()) - 1.0) < 1e-6 and prof["share_by_kind"]["convolution"] > 0
    gen = parts["generate"]
    assert gen["tflop_per_image"] > 0 and gen["project_over_stock"] > 0
    assert all(p["images_per_s"] > 0 for p in gen["paths"].values()) and set(gen["paths"]) == {"project", "stock"}
    prep = parts["dataprep"]
    assert set(prep["stages"]) == {"precompute", "mask", "caption"}
    assert all(s["images_per_s"] > 0 for s in prep["stages"].values())
    targets = {t["name"]: t for t in report["targets"]}
    assert all(t["met"] is None for t in targets.values())   # tiny CPU: nothing to meet
    text = (tmp_path / "gpu_suite.md").read_text()
    assert "## Where a train step's time goes" in text and "## Train step" in text and "## Generation" in text and "## Data prep" in text
    assert f"{gen['project_over_stock']:.3g}" in text


def test_datasheet_peak_matches_card_names():
    suite = load_suite()
    lookup = lambda name: next(v for k, v in suite.PEAK_BF16_TFLOPS if k in name)  # noqa: E731
    assert lookup("NVIDIA H100 80GB HBM3") == 989.0
    assert lookup("NVIDIA H100 PCIe") == 756.0
    assert lookup("NVIDIA H200") == 989.0
    assert lookup("NVIDIA A100-SXM4-80GB") == 312.0
    assert lookup("NVIDIA L40S") == 362.0 and lookup("NVIDIA L4") == 121.0


def test_step_flops_are_affine_in_the_batch_so_two_small_counts_give_any_batch():
    """The suite counts a step's FLOPs at batches 2 and 4 and extrapolates (an eager count at a batch that fits only
    with checkpointing would run out of memory); exact only if the step is a fixed part plus a per-sample part."""
    suite = load_suite()
    fullsize = sys.modules["train_step_fullsize"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bench = suite.TrainBench(True, torch.device("cpu"), torch.float32, 1, 0)
        predicted = bench.step_tflop(16, 7)
        counted = fullsize.count_flops(bench.step_fn, bench.mapper, fullsize.make_batch(7, 16, torch.device("cpu")),
                                       bench.autocast) / 1e12
    finally:
        torch.set_num_threads(threads)
    assert predicted > 0 and counted == pytest.approx(predicted, rel=1e-9)


def test_before_after_sweep_pairs_each_setting_and_the_target_counts_only_the_loops_path():
    """--train-sweep before-after: each setting with autocast (the path before issue 26) and without (the loop's);
    the MFU target is the project's path, so a faster autocast row must not meet it."""
    suite = load_suite()
    pairs = {}
    for setting in suite.BEFORE_AFTER:
        pairs.setdefault((setting.resolution, setting.batch), set()).add(setting.autocast)
    assert all(v == {True, False} for v in pairs.values()) and (1024, 6) in pairs
    rows = [{"resolution": 1024, "mfu": 0.5, "autocast": True}, {"resolution": 1024, "mfu": 0.4, "autocast": False}]
    mfu = next(t for t in suite.targets({"train": {"rows": rows}}, tiny=False) if "MFU" in t["name"])
    assert mfu["value"] == 0.4 and mfu["met"] is False
