"""The train-step benchmarks run: the naive reference computes the project's loss, the full-size configs are
SDXL base's, and the full-size script runs end to end at the tiny config on CPU."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_naive_reference_computes_the_same_loss_and_gradient():
    bench = load("train_step")
    pipe, encoder, mapper, spec, batch = bench.build(SimpleNamespace(device="cpu", batch_size=4, latent_size=8))
    # float64: batched and single kernels then agree to rounding that λ_neg / L_dis cannot magnify.
    pipe.to(torch.float64)
    encoder = type(encoder).from_pipeline(pipe)
    mapper.double()
    spec = type(spec)(spec.alphas_cumprod.double(), spec.prediction_type)
    batch = type(batch)(batch.latents.double(), batch.masks.double(), batch.time_ids.double(), batch.captions1,
                        batch.captions2, batch.identities)
    generators = lambda: [bench.sample_generator(0, i) for i in range(4)]  # noqa: E731
    losses, grads = [], []
    for cls in (bench.CocoinsStep, bench.NaiveStep):
        terms = cls(pipe.unet, encoder, spec, 256, bench.LossConfig(), bench.TripletConfig())(
            mapper, batch, 1, 8, generators())
        terms.loss.backward()
        losses.append(terms.loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in mapper.parameters()]))
        mapper.zero_grad(set_to_none=True)
    assert losses[0] == pytest.approx(losses[1], rel=1e-9)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-9)


def test_fullsize_configs_are_sdxl_base():
    bench = load("train_step_fullsize")
    unet, te1, te2, _, scheduler = bench.build_fullsize(torch.device("meta"), torch.bfloat16)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(te1), count(te2)) == (2_567_463_684, 123_060_480, 694_659_840)
    assert unet.dtype == torch.bfloat16 and torch.get_default_dtype() == torch.float32
    assert te2.config.projection_dim == 1280 and unet.config.cross_attention_dim == 768 + 1280
    assert scheduler.config.num_train_timesteps == 1000


def test_fullsize_script_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step_fullsize.py"), "--tiny",
                           "--steps", "1", "--warmup", "0", "--batch-sizes", "2", "--gradient-checkpointing",
                           "--device", "cpu", "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(out.read_text())["results"][0]
    assert row["batch_size"] == 2 and row["samples_per_s"] > 0
    # Recomputation under gradient checkpointing costs hardware FLOPs, not model FLOPs.
    assert 0 < row["model_tflop_per_step"] < row["hardware_tflop_per_step"]
