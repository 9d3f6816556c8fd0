"""evaluate's preflight: one line per problem with its fix, in seconds, before the first render; and the
rendering precision and VAE decoding chosen per device."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cocoins.config import EvalParams
from cocoins.eval.preflight_eval import evaluate_problems, null_metrics
from cocoins.eval.protocol import fit_decoding, render_dtype

ROOT = Path(__file__).resolve().parents[1]


def test_strict_names_every_missing_metric_model_with_its_fix(tmp_path):
    p = EvalParams(strict=True, face_backend="arcface", arcface_dir=None, clip_model=str(tmp_path / "no-clip"),
                   dreamsim_cache=None, fid_weights=str(tmp_path / "missing.pth"))
    problems = evaluate_problems(p, "tiny")
    assert len(problems) == 4
    face, clip, dreamsim, fid = problems
    assert "face" in face and "eval.arcface_dir" in face and "eval.strict: false" in face
    assert "clip" in clip and "no-clip" in clip
    assert "eval.dreamsim_cache" in dreamsim
    assert "missing.pth does not exist" in fid and "torch-fidelity" in fid
    assert evaluate_problems(p, "tiny", metrics=False) == []


def test_not_strict_is_ready_and_says_which_metrics_will_be_null():
    p = EvalParams(strict=False, face_backend="none", fid_weights=None, dreamsim_cache=None)
    assert evaluate_problems(p, "mini") == []
    nulls = null_metrics(p)
    assert nulls["face"] == "eval.face_backend: none" and "eval.fid_weights" in nulls["fid"]
    # face_backend none is a choice, not a missing model: strict does not object to it
    assert not any("face" in line for line in evaluate_problems(EvalParams(strict=True, face_backend="none"), "tiny"))


def test_base_model_precision_and_device_problems(tmp_path):
    assert evaluate_problems(EvalParams(), str(tmp_path / "nowhere")) == [
        f"models.sdxl: {tmp_path / 'nowhere'} does not exist; set it to a local model directory or a hub id"]
    (tmp_path / "sdxl").mkdir()
    assert "model_index.json" in evaluate_problems(EvalParams(), str(tmp_path / "sdxl"))[0]
    assert "eval.dtype: auto" in evaluate_problems(EvalParams(device="cpu", dtype="bf16"), "tiny")[0]


def test_eval_device_cuda_without_a_gpu_is_a_problem(monkeypatch):
    """On every machine, also one with a GPU: the check asks torch, here answering that no GPU is visible."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA GPU" in evaluate_problems(EvalParams(device="cuda"), "tiny")[0]


def test_render_precision_and_sliced_decoding_follow_the_device():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert render_dtype("auto", cpu) == torch.float32 and render_dtype("auto", gpu) == torch.bfloat16
    assert render_dtype("fp16", gpu) == torch.float16
    with pytest.raises(ValueError, match="eval.dtype"):
        render_dtype("int8", gpu)

    class Vae:
        sliced = False

        def enable_slicing(self):
            self.sliced = True

    class Pipe:
        vae = Vae()

    pipe = Pipe()
    assert fit_decoding(pipe, cpu) is False and not pipe.vae.sliced      # the mini-world keeps its bits
    assert fit_decoding(pipe, gpu) is True and pipe.vae.sliced


def test_strict_evaluate_stops_in_seconds_before_loading_anything(tmp_path):
    """No models/, no data/: the preflight is the first thing the stage does."""
    (tmp_path / "params.yaml").write_text("eval: {strict: true, face_backend: none, fid_weights: /nowhere.pth}\n")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "evaluate.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "evaluate: not ready" in proc.stderr and "/nowhere.pth does not exist" in proc.stderr
    assert "models/base" not in proc.stderr and time.monotonic() - start < 60
