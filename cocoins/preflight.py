"""`cocoins preflight`: every stage's checks at once, against params.yaml, in seconds, before hours of work.

    python -m cocoins.preflight [--params params.yaml] [--stages caption,tag]

Each stage runs its own checks again before its first item (so a stage started alone fails as fast); this
command asks all of them up front: models by directory or hub id (no weights loaded), checkpoints and metric
weights, extra packages, the ollama server and its model, the launchers and the GPUs they ask for, and
whether the train step's micro-batch fits the GPU. One line per problem, naming the fix; exit 1 if any.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import yaml

from cocoins.config import ParamsError, Params, parse_params

STAGES = ("launch", "data", "caption", "tag", "mask", "precompute", "train", "prompts", "evaluate")


def launch_problems(params: Params, visible_gpus: int) -> list[str]:
    """The launchers in params.launch: accelerate on PATH, and no more processes than GPUs to put them on."""
    from cocoins.training.preflight import launched_processes

    problems = []
    for stage, launcher in (("data", params.launch.data), ("train", params.launch.train),
                            ("evaluate", params.launch.evaluate)):
        if not launcher.startswith("accelerate"):
            continue
        if shutil.which("accelerate") is None:
            problems.append(f"launch.{stage} is `{launcher}` but `accelerate` is not on PATH; activate the venv "
                            "(`. .venv/bin/activate`) or set it to python")
        wanted = launched_processes(launcher, visible_gpus)
        if visible_gpus and wanted > visible_gpus:
            problems.append(f"launch.{stage} starts {wanted} processes but {visible_gpus} GPU(s) are visible; "
                            "lower --num_processes or drop it (one process per visible GPU)")
    return problems


def data_problems(params: Params, base_dir: Path) -> list[str]:
    if params.data.source == "synthetic":
        return []
    root = Path(params.data.root)
    root = root if root.is_absolute() else base_dir / root
    return [] if root.is_dir() else [f"data.root: {params.data.root} does not exist (data.source: "
                                     f"{params.data.source}); point it at the dataset folder"]


def prompts_problems(params: Params) -> list[str]:
    """The prompts stage needs an ollama server with its model only for `prompts.backend: ollama`."""
    from cocoins.backends.preflight_data import ollama_problems

    p = params.prompts
    return ollama_problems(p.host, p.model, "prompts") if p.backend == "ollama" else []


def stage_problems(params: Params, base_dir: Path = Path("."), visible_gpus: int | None = None,
                   stages: tuple[str, ...] = STAGES) -> dict[str, list[str]]:
    """{stage: problems} for the chosen stages; an empty list means that stage is ready."""
    from cocoins.backends.preflight_data import (caption_problems, mask_problems, precompute_problems,
                                                 tag_problems)
    from cocoins.eval.preflight_eval import evaluate_problems
    from cocoins.training.preflight import launched_processes, train_problems

    if visible_gpus is None:
        import torch

        visible_gpus = torch.cuda.device_count()
    checks = {
        "launch": lambda: launch_problems(params, visible_gpus),
        "data": lambda: data_problems(params, base_dir),
        "caption": lambda: caption_problems(params.caption),
        "tag": lambda: tag_problems(params.tag),
        "mask": lambda: mask_problems(params.mask),
        "precompute": lambda: precompute_problems(params.precompute, params.models.sdxl),
        "train": lambda: train_problems(params, launched_processes(params.launch.train, visible_gpus)),
        "prompts": lambda: prompts_problems(params),
        "evaluate": lambda: evaluate_problems(params.eval, params.models.sdxl),
    }
    unknown = sorted(set(stages) - set(checks))
    if unknown:
        raise ParamsError(f"unknown preflight stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    return {stage: checks[stage]() for stage in STAGES if stage in stages}


def problem_lines(found: dict[str, list[str]]) -> list[str]:
    """One line per distinct problem, naming every stage it stops: a missing SDXL is one fix, not three."""
    stages_of: dict[str, list[str]] = {}
    for stage, problems in found.items():
        for problem in problems:
            stages_of.setdefault(problem, []).append(stage)
    return [f"{', '.join(stages)}: {problem}" for problem, stages in stages_of.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cocoins preflight", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, default: all")
    args = parser.parse_args(argv)
    start = time.monotonic()
    path = Path(args.params)
    try:
        if not path.is_file():
            raise ParamsError(f"{path} not found; run from the repository root or pass --params")
        params = parse_params(yaml.safe_load(path.read_text()) or {}, path.parent, check_paths=False)
        found = stage_problems(params, path.parent, stages=tuple(s for s in args.stages.split(",") if s))
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    lines = problem_lines(found)
    for line in lines:
        print(line)
    ready = [stage for stage, problems in found.items() if not problems]
    print(f"preflight: {len(lines)} problem(s); ready: {', '.join(ready) or 'none'} "
          f"({time.monotonic() - start:.1f} s)")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
