"""The GPU suite's generate part: images/s at 1024 px through the project's evaluation path against the same
pipeline called stock (benchmarks/gpu_suite.py runs it)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from gpu_device import peak_memory_gib, release, reset_peak, sync  # noqa: E402


def generation_pipeline(tiny: bool, device: torch.device, dtype: torch.dtype):
    import importlib.util

    # By path: `evaluate` is also the name of a Hugging Face package that a machine may have installed.
    spec = importlib.util.spec_from_file_location("bench_evaluate", BENCH / "evaluate.py")
    eval_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_bench)
    if tiny:
        pipe, encoder, mapper = eval_bench.tiny_setup(torch.get_num_threads())
        return pipe.to(device, dtype), encoder, mapper.to(device)
    return eval_bench.gpu_setup()


def pipeline_flops(pipe, prompts: list[str], steps: int, guidance: float, resolution: int) -> float:
    """FLOPs of one stock call (text encoders, `steps` CFG denoising steps, VAE decode), from two counted calls
    (1 and 2 steps): the first plus (steps - 1) times the difference."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for n in (1, 2):
        with FlopCounterMode(display=False) as counter:
            pipe(prompt=prompts, num_inference_steps=n, guidance_scale=guidance, height=resolution,
                 width=resolution, generator=[torch.Generator().manual_seed(i) for i in range(len(prompts))])
        counts.append(counter.get_total_flops())
    return counts[0] + (steps - 1) * (counts[1] - counts[0])


def bench_generate(args, device: torch.device, dtype: torch.dtype, peaks: dict) -> dict:
    """Images/s through the project's evaluation path and through the stock call, same pipeline, batch, seeds."""
    from cocoins.eval.prompt_sets import builtin_scene_prompts, identity_table
    from cocoins.eval.protocol import make_jobs, render

    steps, resolution, batch, images = ((2, 32, 2, 4) if args.tiny else
                                        (args.gen_steps, args.gen_resolution, args.gen_batch, args.gen_images))
    guidance = 5.0
    pipe, encoder, mapper = generation_pipeline(args.tiny, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    subjects = ("man", "woman", "boy", "girl", "person")
    jobs = make_jobs(identity_table(subjects, 8, 0), builtin_scene_prompts(subjects, 12), 1, 0).iloc[:images]
    plain = [p.replace("<subj1>", "").replace("</subj1>", "") for p in jobs["tagged"]]

    def project():
        render(pipe, encoder, mapper, jobs, steps, guidance, resolution, batch, "project")

    def stock():
        for start in range(0, images, batch):
            seeds = jobs["noise_seed"].iloc[start:start + batch].tolist()
            pipe(prompt=plain[start:start + batch], num_inference_steps=steps, guidance_scale=guidance,
                 height=resolution, width=resolution, generator=[torch.Generator().manual_seed(s) for s in seeds])

    result = {"model": "tiny SDXL config" if args.tiny else "SDXL base (published configs, random weights) + "
              "SDXL VAE, bf16", "steps": steps, "resolution": resolution, "guidance": guidance, "batch": batch,
              "images": images, "paths": {}}
    with torch.no_grad():
        result["tflop_per_image"] = pipeline_flops(pipe, plain[:1], steps, guidance, resolution) / 1e12
        # A warm-up round, then `rounds` timed rounds alternating the two paths (clocks drift between rounds: on the
        # H200 one run gave project / stock 0.99 and the next 0.91 from one round each); the median round counts.
        rounds = 1 if args.tiny else 3
        times: dict[str, list[float]] = {"project": [], "stock": []}
        for k in range(rounds + 1):
            for name, fn in (("project", project), ("stock", stock)):
                reset_peak(device)
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                if k:
                    times[name].append(time.perf_counter() - start)
                result["paths"][name] = {"peak_memory_gib": peak_memory_gib(device)}
        for name, seconds in times.items():
            median = sorted(seconds)[len(seconds) // 2]
            result["paths"][name].update(seconds=median, rounds_s=seconds, images_per_s=images / median)
    for path in result["paths"].values():
        path["achieved_tflops"] = path["images_per_s"] * result["tflop_per_image"]
        path["mfu"] = (path["achieved_tflops"] / peaks["datasheet_bf16_dense_tflops"]
                       if peaks["datasheet_bf16_dense_tflops"] else None)
    result["project_over_stock"] = (result["paths"]["project"]["images_per_s"]
                                    / result["paths"]["stock"]["images_per_s"])
    print("generate", json.dumps(result), flush=True)
    del pipe, encoder, mapper
    release()
    return result
