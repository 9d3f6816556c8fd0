"""benchmarks/data_prep.py: the tiny CPU run end to end, and the real-size (--gpu) models' shapes on meta."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("data_prep", ROOT / "benchmarks" / "data_prep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(importlib.util.find_spec("sam2") is None,
                    reason="sam2 not installed (mask stage): SAM2_BUILD_CUDA=0 pip install sam2==1.1.0")
def test_tiny_run_reports_every_stage(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["--images", "2", "--batch", "2", "--new-tokens", "3", "--tag-tokens", "3", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["mode"] == "tiny configs" and report["device"] == "cpu"
    assert list(report["stages"]) == ["caption", "tag", "mask", "precompute"]
    assert all(s["images"] == 2 and s["images_per_s"] > 0 for s in report["stages"].values())
    assert "precompute:" in capsys.readouterr().out


def test_gpu_mode_needs_cuda_or_tiny(bench):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="--tiny --device cpu"):
        bench.main(["--gpu"])


def test_real_size_models_match_the_published_parameter_counts(bench):
    """The --gpu configs, built on the meta device (no memory): LLaVA-Next 7B, Llama 8B, GD-T/B, SDXL VAE."""
    meta = torch.device("meta")
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert round(count(bench.build_llava(True, meta, torch.float16)[1]) / 1e9, 2) == 7.57
    assert round(count(bench.build_chat_llm(True, meta, torch.float16)[1]) / 1e9, 2) == 8.03
    assert round(count(bench.build_grounding(True, False, meta, torch.float16)[1]) / 1e6) == 172
    assert round(count(bench.build_grounding(True, True, meta, torch.float16)[1]) / 1e6) == 232
    assert round(count(bench.build_vae(True, meta, torch.float16)) / 1e6, 2) == 83.65
