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


def test_real_size_llava_processor_writes_one_image_token_per_model_feature(bench):
    """A hand-built LLaVA-Next processor must count the CLIP tower's CLS token (num_additional_image_tokens=1),
    which "default" selection drops; without it the processor writes one token fewer than the model's features
    per image and generation stops with "Image features and image tokens do not match". The model's side is
    its own packing of meta-device features of the tower's shape, so nothing is computed."""
    from PIL import Image

    processor, model = bench.build_llava(True, torch.device("meta"), torch.float16, text_layers=1)
    inner = model.model
    vision = model.config.vision_config
    per_tile = (vision.image_size // vision.patch_size) ** 2            # 576: 336 px, patch 14, CLS dropped
    for size in ((500, 300), (336, 336), (300, 700)):
        enc = processor(images=[Image.new("RGB", size)], text=["<image> describe"], return_tensors="pt")
        tokens = int((enc["input_ids"] == model.config.image_token_index).sum())
        tiles = enc["pixel_values"].shape[1]
        features = torch.empty(tiles, per_tile, model.config.text_config.hidden_size, device="meta")
        packed, _ = inner.pack_image_features([features], enc["image_sizes"], vision_feature_select_strategy="default",
                                              image_newline=inner.image_newline)
        assert tokens == packed[0].shape[0], size
