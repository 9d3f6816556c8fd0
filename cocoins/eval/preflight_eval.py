"""Evaluate's preflight: the base model, the rendering precision and every metric model, checked in seconds
before the first render (no weights are loaded).

`evaluate_problems` is what stops the stage (and `cocoins preflight`): with `eval.strict: true` a metric whose
model or package is absent is a problem; with `strict: false` it is not, and `null_metrics` says up front
which metrics will be written as null and why, instead of the reader finding out hours later.
"""

from __future__ import annotations

from cocoins.checks import model_problems
from cocoins.config import EvalParams
from cocoins.eval.metrics.base import Availability
from cocoins.eval.metrics.clip import ClipScorer
from cocoins.eval.metrics.dreamsim import DreamSimEmbedder
from cocoins.eval.metrics.faces import make_face_embedder
from cocoins.eval.metrics.fid import inception_available


def metric_availability(p: EvalParams) -> dict[str, Availability]:
    """(ok, reason) of each metric family evaluate scores with a model of its own, from the disk only."""
    faces = make_face_embedder(p.face_backend, p.arcface_dir)
    return {
        "face": faces.available() if faces else (False, "eval.face_backend: none"),
        "clip": ClipScorer.available(p.clip_model),
        "dreamsim": DreamSimEmbedder(p.dreamsim_cache, p.dreamsim_type).available(),
        "fid": inception_available(p.fid_weights),
    }


def null_metrics(p: EvalParams) -> dict[str, str]:
    """{metric family: why it will be null} under `eval.strict: false`."""
    return {name: reason for name, (ok, reason) in metric_availability(p).items() if not ok}


def evaluate_problems(p: EvalParams, sdxl: str = "tiny", metrics: bool = True) -> list[str]:
    """One line per thing evaluate would fail on, each naming its fix; [] means ready to render.

    Args:
        p: the `eval` params group.
        sdxl: `models.sdxl` (what `models/base` stands for): tiny, mini, a diffusers directory or a hub id.
        metrics: False for a stage that only renders (render_base).
    """
    # tiny and mini are built by the base stage itself
    problems = [] if sdxl in ("tiny", "mini") else model_problems(sdxl, "models.sdxl", "model_index.json")
    if p.device == "cpu" and p.dtype in ("fp16", "bf16"):
        problems.append(f"eval.dtype: {p.dtype} with eval.device: cpu renders in half precision on a CPU "
                        "(slow, and other bits than the mini-world's fp32); set eval.dtype: auto")
    if p.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append("eval.device: cuda but no CUDA GPU is visible; set eval.device: auto (or cpu)")
    if metrics and p.strict:
        problems += [f"eval.strict: true and {name} is unavailable: {reason} (or set eval.strict: false to "
                     "write it as null)" for name, reason in null_metrics(p).items()
                     if not (name == "face" and p.face_backend == "none")]
    return problems
