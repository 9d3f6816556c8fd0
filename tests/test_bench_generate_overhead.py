"""benchmarks/generate_overhead.py times each part of both generation paths on the tiny SDXL."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_parts_are_timed_on_both_paths_and_only_the_project_runs_the_mapper():
    from generate_overhead import PARTS, main

    threads = torch.get_num_threads()
    try:
        result = main(["--images", "2", "--batch", "2", "--steps", "1", "--rounds", "1"])
    finally:
        torch.set_num_threads(threads)
    project, stock = result["project"], result["stock"]
    for path in (project, stock):
        assert path["total"] > 0 and all(path[p] > 0 for p in ("text encoders", "unet", "vae decode", "PIL"))
        assert abs(sum(path[p] for p in PARTS) - path["total"]) < 1e-6 * path["total"]
    assert all(project[p] > 0 for p in ("codes", "mapper", "tokenize"))
    assert stock["codes"] == stock["mapper"] == stock["tokenize"] == 0   # stock tokenizes inside encode_prompt
