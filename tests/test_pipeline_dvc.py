"""The whole DAG through DVC on a small world: repro, cache, an experiment, metrics diff, plots."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from system_deps import require

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "caption", "tag", "mask", "base", "identity", "diagnose", "precompute", "train", "prompts",
          "render_base", "evaluate"]

# The embedded default's DAG (the mini SDXL trained by the base stage, the trait classifier) with a few steps
# of everything and a smaller world, so the test stays around two minutes on 2 cores.
SMALL = {
    "data": {"identities": 6, "images_per_identity": 2, "two_person_images": 1},
    "mini": {"corpus_images": 32, "vae_steps": 2, "vae_batch": 8, "unet_steps": 2, "unet_batch": 8},
    "identity": {"steps": 4, "train_images": 32, "batch_size": 16, "min_accuracy": 0.0,
                 "check_images": 1},
    "diagnose": {"identities": 2, "seeds": 2, "ti_images": 4, "ti_steps": 3, "ti_batch": 2, "steps": 2},
    "train": {"steps": 3, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2},
    "prompts": {"subjects": ["man", "woman"]},
    "eval": {"identities_per_subject": 2, "seeds_per_prompt": 2, "steps": 2, "batch_size": 8},
}


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout.split("\n")
    skip = ("data/", "models/", "reports/", "tests/", ".ci/")
    return [f for f in out if f and not f.startswith(skip) and (ROOT / f).is_file() and f != "dvc.lock"]


def run(cmd: str, cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"`{cmd}` failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def small_project(dest: Path, groups: dict | None = None, **extra_env: str) -> dict:
    """Copy the project into `dest` with the SMALL world (or `groups` of params) on the CPU, commit it in a new
    git repo; return the env to run DVC there (the venv's python on PATH, the copy's package first on PYTHONPATH,
    then the caller's PYTHONPATH: tests/fake_cuda reaches the stages)."""
    for f in project_files():
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for group, values in (SMALL if groups is None else groups).items():
        params[group].update(values)
    # On the CPU in every group, also on a machine with a GPU: `device: auto` would pick CUDA there, whose
    # attention backward is not deterministic, and these tests compare dvc.lock bit for bit and train. One thread
    # in every stage (the groups' cpu_threads, the others' OMP_NUM_THREADS): the same bits under `make test`'s two
    # workers, alone, or on a machine with more cores, and two such tests fill two cores without contention.
    for group in params.values():
        if isinstance(group, dict) and "device" in group:
            group["device"] = "cpu"
        if isinstance(group, dict) and "cpu_threads" in group:
            group["cpu_threads"] = 1
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(dest), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           **extra_env}
    run("git init -q && git add -A && git commit -qm init", dest, env)
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    dest = tmp_path_factory.mktemp("project")
    return dest, small_project(dest)


def is_score(value) -> bool:
    """A Sim / Div / agreement: a finite float in [-1, 1] (cosines and shares), not inf or NaN."""
    return isinstance(value, float) and math.isfinite(value) and -1.0 <= value <= 1.0


@pytest.mark.slow
def test_repro_cache_experiment_and_metrics_diff(project):
    dest, env = project
    first = run("dvc repro", dest, env)
    assert ran_stages(first) == STAGES
    metrics = json.loads((dest / "reports/eval/metrics.json").read_text())
    assert {"portraits", "scenes", "overall", "data"} <= set(metrics)
    for key in ("identity_sim", "identity_div", "base_identity_sim", "base_identity_div", "trait_agreement"):
        assert is_score(metrics["scenes"][key]), (key, metrics["scenes"][key])
    diagnose = json.loads((dest / "reports/diagnose/metrics.json").read_text())
    for row in ("plain", "describe", "textual_inversion"):
        assert is_score(diagnose[row]["true_trait_agreement"]) and diagnose[row]["images"] == 4, diagnose[row]
    assert json.loads((dest / "reports/identity/metrics.json").read_text())["identity_traits"]
    assert list((dest / "reports/eval/grids").glob("*.png"))
    assert (dest / "models/mapper/diffusion_pytorch_model.safetensors").is_file()

    second = run("dvc repro", dest, env)
    assert ran_stages(second) == []

    # Bit-for-bit: rerunning every stage from scratch reproduces every hash in dvc.lock.
    lock = (dest / "dvc.lock").read_text()
    forced = run("dvc repro --force", dest, env)
    assert ran_stages(forced) == STAGES
    assert (dest / "dvc.lock").read_text() == lock

    run("git add -A && git commit -qm 'baseline run'", dest, env)
    experiment = run("dvc exp run -S loss.gamma=1e-4", dest, env)
    assert ran_stages(experiment) == ["train", "evaluate"]
    diff = json.loads(run("dvc metrics diff --json", dest, env))
    changed = {path for path, values in diff.items() if values}
    assert "reports/train/live/metrics.json" in changed and "reports/eval/metrics.json" in changed


@pytest.mark.slow
def test_plots_render_offline(project):
    dest, env = project
    template = ROOT / ".dvc" / "offline-plots.html"
    require(template.is_file(), "the offline plot template .dvc/offline-plots.html",
            "`make install` writes it with npm (Debian: apt-get install npm)")
    shutil.copy2(template, dest / ".dvc" / "offline-plots.html")
    run("dvc repro", dest, env)
    run("dvc plots show -o plots_html", dest, env)
    page = (dest / "plots_html" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vegaEmbed" in page
    # Each curve once: dvclive's files only inside the declared panels, never as panels of their own; an
    # evaluation panel only for a metric with data (no CLIP model here).
    assert '"text": "Train loss terms"' in page and '"text": "reports/train/' not in page
    assert '"text": "reports/eval/plots/scenes_identity_div_per_subject.json"' in page and "clip_per_" not in page


@pytest.mark.slow  # one mask stage under DVC with the tiny original Grounding DINO and a tiny random SAM 2
def test_experiment_with_the_original_groundingdino(project, tiny_groundingdino_package):
    """`dvc exp run mask -S mask.detector_impl=groundingdino`: the original package's Grounding DINO on a
    Grounded-SAM-2-style config .py + .pth drives the DVC-run mask stage; nothing downstream is run."""
    from cocoins.backends.tiny import SAM2_CONFIG, SAM2_TINY_OVERRIDES

    dest, env = project
    config, checkpoint, bert = tiny_groundingdino_package
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["mask"].update({
        "backend": "grounded_sam2", "face_counter": "grounding", "groundingdino_config": str(config),
        "groundingdino_checkpoint": str(checkpoint), "groundingdino_text_encoder": str(bert),
        "groundingdino_min_size": 64, "groundingdino_max_size": 96, "box_threshold": 0.0, "text_threshold": 0.0,
        "face_threshold": 0.0, "sam2_config": SAM2_CONFIG, "sam2_checkpoint": "random",
        "sam2_overrides": list(SAM2_TINY_OVERRIDES), "device": "cpu", "batch_size": 8})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run("dvc exp run mask -S mask.detector_impl=groundingdino", dest, env)
    assert "mask" in ran_stages(out) and set(ran_stages(out)) <= {"ingest", "caption", "tag", "mask"}
    assert "[mask] detector: groundingdino package (GroundingDINO_Tiny.py, groundingdino_tiny.pth)" in out
    lock = yaml.safe_load((dest / "dvc.lock").read_text())
    assert lock["stages"]["mask"]["params"]["params.yaml"]["mask"]["detector_impl"] == "groundingdino"
    subjects = pd.read_parquet(dest / "data/subjects.parquet")
    assert len(subjects) == len(pd.read_parquet(dest / "data/images.parquet").query("kept"))
    assert set(subjects["reason"]) <= {"empty mask", "30 faces (max 1)"}   # every query box labelled "face" too
