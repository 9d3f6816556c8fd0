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
    gen = parts["generate"]
    assert gen["tflop_per_image"] > 0 and gen["project_over_stock"] > 0
    assert all(p["images_per_s"] > 0 for p in gen["paths"].values()) and set(gen["paths"]) == {"project", "stock"}
    prep = parts["dataprep"]
    assert set(prep["stages"]) == {"precompute", "mask", "caption"}
    assert all(s["images_per_s"] > 0 for s in prep["stages"].values())
    targets = {t["name"]: t for t in report["targets"]}
    assert all(t["met"] is None for t in targets.values())   # tiny CPU: nothing to meet
    text = (tmp_path / "gpu_suite.md").read_text()
    assert "## Train step" in text and "## Generation" in text and "## Data prep" in text
    assert f"{gen['project_over_stock']:.3g}" in text


def test_datasheet_peak_matches_card_names():
    suite = load_suite()
    lookup = lambda name: next(v for k, v in suite.PEAK_BF16_TFLOPS if k in name)  # noqa: E731
    assert lookup("NVIDIA H100 80GB HBM3") == 989.0
    assert lookup("NVIDIA H100 PCIe") == 756.0
    assert lookup("NVIDIA H200") == 989.0
    assert lookup("NVIDIA A100-SXM4-80GB") == 312.0
    assert lookup("NVIDIA L40S") == 362.0 and lookup("NVIDIA L4") == 121.0
