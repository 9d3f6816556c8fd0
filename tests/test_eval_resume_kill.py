"""`python stages/render_base.py` killed with SIGKILL after some render batches, then rerun: it renders only
the batches that were not done, and its images, sidecars and latents are the same bytes as an uninterrupted
run's. evaluate renders through the very same loop (`cocoins.eval.render_run.render_method`)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kill_helper import kill_when

from cocoins.eval.prompt_sets import builtin_scene_prompts, identity_table, portrait_prompts
from cocoins.io import write_parquet
from cocoins.sdxl.tiny import save_tiny_sdxl

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = ("man", "woman")
PARAMS = """\
models: {sdxl: tiny}
prompts: {subjects: [man, woman]}
eval: {identities_per_subject: 2, scene_identities_per_subject: 1, seeds_per_prompt: 3, steps: 2, resolution: 32,
       batch_size: 2, device: cpu, cpu_threads: 1}
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A project dir holding what render_base reads: params.yaml, models/base, data/eval."""
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(PARAMS)
    save_tiny_sdxl(root / "models" / "base", seed=0)
    write_parquet(portrait_prompts(SUBJECTS), root / "data/eval/portraits.parquet")
    write_parquet(builtin_scene_prompts(SUBJECTS, 3), root / "data/eval/scenes.parquet")
    write_parquet(identity_table(SUBJECTS, 2, 1234), root / "data/eval/identities.parquet")
    return root


def stage(cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(ROOT / "stages" / "render_base.py")], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # three stage processes rendering tiny images: 558 s measured with load ~10 on 2 shared cores
def test_sigkill_then_rerun_renders_the_rest_with_the_same_bytes(template, tmp_path):
    straight = Path(shutil.copytree(template, tmp_path / "straight"))
    killed = Path(shutil.copytree(template, tmp_path / "killed"))
    first = stage(straight)
    victim = stage(killed)
    done = killed / "data/work/render_base/batches"
    kill_when(victim, lambda: len(list(done.glob("batch-*.json"))) >= 2, "two render batches")
    assert not (killed / "data/renders/base").exists(), "the run finished before the kill; render more batches"
    kept = len(list(done.glob("batch-*.json")))
    straight_out = finish(first)

    out = finish(stage(killed))
    total = int(straight_out.split("'total': ")[1].split("}")[0])
    assert f"'rendered now': {total - kept}, 'kept from a killed run': {kept}" in out
    a, b = files(straight / "data/renders/base"), files(killed / "data/renders/base")
    rows = sum(len(json.loads(v)) for k, v in a.items() if k.startswith("batches/") and k.endswith(".json"))
    assert a.keys() == b.keys() and len([k for k in a if k.endswith(".png")]) == rows > 0
    assert a == b       # every PNG, sidecar, manifest row and latent, byte for byte
