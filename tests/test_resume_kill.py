"""`python stages/train.py` killed with SIGKILL after a checkpoint, then rerun: the final mapper equals an
uninterrupted run's bit for bit, and so do the training curves."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kill_helper import kill_when

from cocoins.method.mapper import WEIGHTS_NAME
from cocoins.sdxl.tiny import save_tiny_sdxl
from cocoins.training.ddp_check import write_tiny_shards

ROOT = Path(__file__).resolve().parents[1]
STEPS = 24
PARAMS = f"""\
mapper: {{code_dim: 8, layers: 2, hidden_dim: 16}}
loss: {{gamma: 1.0e-3}}
train: {{steps: {STEPS}, batch_size: 4, warmup_steps: 2, checkpoint_every: 2, seed: 1, device: cpu, lr: 1.0e-3}}
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A project dir holding what the train stage reads: params.yaml, models/base, data/ shards + index."""
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(PARAMS)
    save_tiny_sdxl(root / "models" / "base", seed=0)
    write_tiny_shards(root / "data" / "latents")
    (root / "data" / "latents" / "train.parquet").rename(root / "data" / "train.parquet")
    return root


def project(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


def train(cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "stages" / "train.py")], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow  # about 40 s: three stage processes (the in-process resume test in test_training_loop is fast)
def test_sigkill_then_rerun_equals_uninterrupted_run(template, tmp_path):
    straight = project(template, tmp_path / "straight")
    killed = project(template, tmp_path / "killed")
    first = train(straight)   # both start together: the two CPUs overlap their start-up

    victim = train(killed)
    kill_when(victim, lambda: bool(list((killed / "models" / "checkpoints").glob("step-*/state.json"))),
              "a checkpoint")
    assert not (killed / "models" / "mapper").exists(), "the run finished before the kill; raise STEPS"
    saved = sorted(p.name for p in (killed / "models" / "checkpoints").glob("step-*"))
    finish(first)

    # `dvc repro` deletes the stage's outputs, except the persistent checkpoints, before rerunning it.
    shutil.rmtree(killed / "reports", ignore_errors=True)
    out = finish(train(killed))
    resumed = int(re.search(r"resumed from step: (\d+)", out).group(1))
    assert 0 < resumed < STEPS and f"step-{resumed:07d}" in saved

    a = load_file(str(straight / "models/mapper" / WEIGHTS_NAME))
    b = load_file(str(killed / "models/mapper" / WEIGHTS_NAME))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    curves = lambda p: (p / "reports/train/live/plots/metrics/loss.tsv").read_text()
    assert curves(straight) == curves(killed) and len(curves(straight).splitlines()) == STEPS + 1
