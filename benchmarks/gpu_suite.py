"""The GPU suite in one command: the full-size SDXL train step, generation through the project's path against
stock `StableDiffusionXLPipeline`, and the data-prep models at real sizes, all with random weights. Writes
one JSON and one Markdown table to --out. Nothing is asserted: the targets are reported as met or not.

    python benchmarks/gpu_suite.py --out gpu_suite            # one H100 / H200, about 8 minutes with --budget-s 430 (see benchmarks/README.md)
    python benchmarks/gpu_suite.py --tiny --out /tmp/suite     # tiny configs on the CPU, about a minute (the test)
    python benchmarks/gpu_suite.py --prepare-wheels .whl      # here: the wheels the lent GPU machine lacks

What it measures (the same numbers on any card; MFU against the card's dense bf16 peak from PEAK_BF16_TFLOPS,
and against an 8192^3 bf16 matrix product measured in the same run):
- train: `CocoinsStep` (benchmarks/train_step_fullsize.py: SDXL base's UNet and both text encoders from their
  published configs, bf16 frozen weights, fp32 mapper) at 512 and 1024 px over a batch sweep, with and without
  gradient checkpointing, SDPA against diffusers' plain attention processor, and `torch.compile` of the UNet
  at one setting when enough of the budget is left. FLOPs per step: torch.utils.flop_counter on one real step
  (model FLOPs: no recomputation; with checkpointing the recomputed FLOPs are reported as hardware FLOPs).
  Target: MFU >= 45% at 1024 px.
- generate: images/s at 1024 px, 30 steps, CFG, the published SDXL VAE decoding, through the project's
  evaluation path (`cocoins.eval.protocol.render`: pseudo-words from the mapper, prompt embeddings handed to
  the pipeline) against the same pipeline called stock with the plain prompt, same batch and seeds, in one
  process. Target: the project's path no slower than stock (ratio >= 0.97: timing noise).
- dataprep: benchmarks/data_prep.py at real sizes: the SDXL VAE encoding at 1024 px, Grounding DINO base +
  SAM 2.1 hiera-L, and the LLaVA-Next captioner at its 7B config (Mistral-7B + CLIP ViT-L/14-336) when the card
  has >= 40 GiB and the budget has >= 100 s left, else with 8 of Mistral's 32 layers (the reason is recorded).
Each part that fails (out of memory, a missing package) records its error and the suite goes on; each setting
that would overrun the budget is recorded as skipped.

The lent machine (Python 3.12, torch 2.11, transformers 5.17, accelerate; no diffusers, sam2 or open_clip, and
no network) gets the missing packages as wheels. Here, once, in the repository's root:

    echo /.whl/ >> .git/info/exclude
    python benchmarks/gpu_suite.py --prepare-wheels .whl     # pip download / pip wheel --no-deps, ~8 MiB

(the same as `pip download diffusers==0.42.1 --no-deps -d .whl` for each name in CARRIED_WHEELS; the ones
published only as source are built into pure-Python wheels with `pip wheel --no-deps`). Then the one prepared
command, carrying .whl (timeout 600 s):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SAM2_BUILD_CUDA=0 \
      && python3 benchmarks/gpu_suite.py --out $OUT/gpu_suite --budget-s 450

and commit $OUT/gpu_suite/* as benchmarks/results/gpu_suite-<card>.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import data_prep  # noqa: E402
import train_step_fullsize as fullsize  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s; matched in this order
# against torch.cuda.get_device_name() (the PCIe / NVL parts before the SXM name they contain).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0),
                    ("H100", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0),
                    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0))
# What the lent machine lacks, pinned as in pyproject.toml / the venv (open_clip: only its CLIP BPE file).
CARRIED_WHEELS = ("diffusers==0.42.1", "importlib_metadata==10.2.0", "sam2==1.1.0", "hydra-core==1.3.8",
                  "omegaconf==2.3.1", "antlr4-python3-runtime==4.9.3", "iopath==0.1.10", "open-clip-torch==3.3.0")


@dataclass(frozen=True)
class TrainSetting:
    resolution: int
    batch: int
    checkpointing: bool = False
    attention: str = "sdpa"      # sdpa | plain (diffusers' AttnProcessor: softmax(QK^T)V materialised)
    compile: bool = False


FULL_TRAIN = (TrainSetting(512, 8), TrainSetting(512, 16), TrainSetting(512, 24), TrainSetting(512, 32, True),
              TrainSetting(1024, 2), TrainSetting(1024, 4), TrainSetting(1024, 6), TrainSetting(1024, 8, True),
              TrainSetting(1024, 16, True), TrainSetting(1024, 4, attention="plain"))
FULL_COMPILE = TrainSetting(1024, 4, compile=True)   # the largest batch that fits without checkpointing
# --tiny: the code paths only (the batch sweep is the GPU run's)
TINY_TRAIN = (TrainSetting(32, 2), TrainSetting(32, 2, True), TrainSetting(32, 2, attention="plain"))


class Budget:
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_memory_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def datasheet_peak(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "no datasheet peak for a CPU"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops, f"datasheet, dense bf16, matched '{key}' in '{name}'"
    return None, f"'{name}' is not in PEAK_BF16_TFLOPS; pass --peak-tflops"


def measure_matmul(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """TFLOP/s of an n x n x n product on random data, the mean of `repeats` after 3 warm-ups."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


# ---- train ----------------------------------------------------------------------------------------------------
def set_attention(unet, kind: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0() if kind == "sdpa" else AttnProcessor())


def setting_fields(setting: TrainSetting) -> dict:
    return {"resolution": setting.resolution, "batch": setting.batch, "checkpointing": setting.checkpointing,
            "attention": setting.attention, "compile": setting.compile}


class TrainBench:
    """The project's `CocoinsStep` on full-size (or tiny) SDXL towers, one setting at a time."""

    def __init__(self, tiny: bool, device: torch.device, dtype: torch.dtype, steps: int, warmup: int):
        from cocoins.method.losses import LossConfig
        from cocoins.method.mapper import Mapper, MapperConfig
        from cocoins.method.triplets import TripletConfig
        from cocoins.sdxl.encode import PromptEncoder
        from cocoins.training.step import CocoinsStep, DenoiserSpec

        if tiny:
            unet, te1, te2, (tok1, tok2), scheduler = fullsize.build_tiny(device)
            unet, te1, te2 = (m.to(dtype) for m in (unet, te1, te2))
            mapper_config = MapperConfig(code_dim=256, layers=8, hidden_dim=256, out_dims=(32, 32))
        else:
            unet, te1, te2, (tok1, tok2), scheduler = fullsize.build_fullsize(device, dtype)
            mapper_config = MapperConfig(code_dim=256, layers=8, hidden_dim=1024, out_dims=(768, 1280))
        spec = DenoiserSpec(scheduler.alphas_cumprod.to(device, torch.float32), scheduler.config.prediction_type)
        torch.manual_seed(0)
        self.mapper = Mapper(mapper_config).to(device)   # fp32 and trained, as in the train stage
        self.unet, self.tiny, self.device, self.steps, self.warmup = unet, tiny, device, steps, warmup
        self.step_fn = CocoinsStep(unet, PromptEncoder(tok1, tok2, te1, te2), spec, mapper_config.code_dim,
                                   LossConfig(), TripletConfig())
        self.autocast = ((lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32
                         else contextlib.nullcontext)
        self.counts: dict[tuple[int, bool], tuple[float, float]] = {}   # (latent, checkpointing) -> f(1), f(2)

    def step_tflop(self, latent: int, batch: int) -> float:
        """TFLOP of one step at `batch`, from eager counts at batches 2 and 4, extrapolated along a line: the step
        costs a fixed part (prompts encoded once per batch) plus a per-sample part, which varies a little with each
        sample's caption (tiny towers: the first caption costs 0.8% more than the others), so the line is exact
        for the benchmark's cycle of captions from batch 2 on (tests/test_gpu_suite.py checks it). Counting small
        keeps a setting that fits only with checkpointing from running out of memory in an eager count."""
        key = (latent, self.unet.is_gradient_checkpointing)
        if key not in self.counts:
            self.counts[key] = tuple(fullsize.count_flops(self.step_fn, self.mapper,
                                                          fullsize.make_batch(b, latent, self.device),
                                                          self.autocast) / 1e12 for b in (2, 4))
        two, four = self.counts[key]
        return two + (batch - 2) * (four - two) / 2

    def measure(self, setting: TrainSetting) -> dict:
        """FLOPs of one step (counted eagerly, once per resolution and batch), then the timed steps."""
        row = setting_fields(setting)
        latent = 16 if self.tiny else setting.resolution // 8   # the tiny VAE downsamples by 2
        batch = fullsize.make_batch(setting.batch, latent, self.device)
        set_attention(self.unet, setting.attention)
        row["model_tflop_per_step"] = self.step_tflop(latent, setting.batch)
        optimizer = torch.optim.AdamW(self.mapper.parameters(), lr=1e-4, weight_decay=0.2)
        try:
            if setting.checkpointing:
                self.unet.enable_gradient_checkpointing()
                row["hardware_tflop_per_step"] = self.step_tflop(latent, setting.batch)
            if setting.compile:
                self.step_fn.unet = torch.compile(self.unet)
                start = time.perf_counter()
                fullsize.run_step(self.step_fn, self.mapper, optimizer, batch, 0, self.autocast)
                sync(self.device)
                row["compile_s"] = round(time.perf_counter() - start, 1)
            step_s = fullsize.time_steps(self.step_fn, self.mapper, optimizer, batch,
                                         SimpleNamespace(warmup=self.warmup, steps=self.steps), self.autocast,
                                         self.device.type == "cuda")
        finally:
            self.step_fn.unet = self.unet
            self.unet.disable_gradient_checkpointing()
            self.mapper.zero_grad(set_to_none=True)
        row.update(step_s=step_s, samples_per_s=setting.batch / step_s,
                   achieved_tflops=row["model_tflop_per_step"] / step_s, peak_memory_gib=peak_memory_gib(self.device))
        return row


def bench_train(bench: TrainBench, settings, budget: Budget, keep_s: float, peaks: dict) -> list[dict]:
    """Each setting unless fewer than keep_s seconds of the budget are left; out of memory is a result too."""
    rows = []
    for setting in settings:
        if budget.left() < keep_s:
            row = {**setting_fields(setting), "skipped": f"time budget: {budget.left():.0f} s left"}
        else:
            try:
                row = bench.measure(setting)
            except torch.OutOfMemoryError:
                row = {**setting_fields(setting), "out_of_memory": True}
            release()
            reset_peak(bench.device)
        add_mfu(row, peaks)
        print("train", json.dumps(row), flush=True)
        rows.append(row)
    return rows


def add_mfu(row: dict, peaks: dict) -> None:
    if "achieved_tflops" not in row:
        return
    for key, peak in (("mfu", peaks["datasheet_bf16_dense_tflops"]),
                      ("mfu_vs_measured_matmul", peaks["measured_matmul_tflops"])):
        row[key] = row["achieved_tflops"] / peak if peak else None
    if "hardware_tflop_per_step" in row and peaks["datasheet_bf16_dense_tflops"]:
        row["hfu"] = row["hardware_tflop_per_step"] / row["step_s"] / peaks["datasheet_bf16_dense_tflops"]


KERNEL_GROUPS = (("attention", ("flash", "fmha", "attention", "sdpa")),   # first: cutlass attention kernels
                 ("convolution", ("conv", "implicit", "fprop", "dgrad", "wgrad", "winograd", "cudnn")),
                 ("normalisation", ("norm", "welford")),
                 ("matmul", ("gemm", "matmul", "cutlass", "cublas", "xmma", "nvjet", "addmm", "aten::mm", "bmm")))


def kernel_group(name: str) -> str:
    lowered = name.lower()
    for group, keys in KERNEL_GROUPS:
        if any(k in lowered for k in keys):
            return group
    return "other (elementwise, copies, reductions)"


def bench_profile(bench: TrainBench, setting: TrainSetting, steps: int = 2) -> dict:
    """Where a step's time goes (torch.profiler over `steps` steps after two warm-ups): the device's busy time
    against the wall clock (a gap is launch overhead or host work), its share by kernel kind, the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    cuda = bench.device.type == "cuda"
    latent = 16 if bench.tiny else setting.resolution // 8
    batch = fullsize.make_batch(setting.batch, latent, bench.device)
    set_attention(bench.unet, setting.attention)
    optimizer = torch.optim.AdamW(bench.mapper.parameters(), lr=1e-4, weight_decay=0.2)
    for k in range(2):
        fullsize.run_step(bench.step_fn, bench.mapper, optimizer, batch, k, bench.autocast)
    sync(bench.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for k in range(steps):
            fullsize.run_step(bench.step_fn, bench.mapper, optimizer, batch, k, bench.autocast)
        sync(bench.device)
    wall_ms = (time.perf_counter() - start) * 1e3 / steps
    # Count each microsecond once: on the GPU the kernels alone (an op's self device time repeats its kernels',
    # and record_function ranges carry device time too); on the CPU the ops, without the ranges.
    if cuda:
        events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    else:
        events = [e for e in prof.key_averages() if not (getattr(e, "is_user_annotation", False)
                                                          or e.key.startswith(("cocoins/", "ProfilerStep")))]
    self_us = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    busy_us = sum(self_us(e) for e in events)
    groups: dict[str, float] = {}
    for e in events:
        group = kernel_group(e.key)
        groups[group] = groups.get(group, 0.0) + self_us(e)
    top = sorted(events, key=self_us, reverse=True)[:12]
    return {"setting": setting_fields(setting), "clock": "device kernels" if cuda else "host ops (CPU run)",
            "wall_ms_per_step": wall_ms, "busy_ms_per_step": busy_us / 1e3 / steps,
            "busy_share_of_wall": busy_us / 1e3 / steps / wall_ms,
            "share_by_kind": {g: t / busy_us for g, t in sorted(groups.items(), key=lambda kv: -kv[1])} if busy_us else {},
            "top": [{"name": e.key[:90], "calls_per_step": e.count / steps, "ms_per_step": self_us(e) / 1e3 / steps}
                    for e in top]}


# ---- generate -------------------------------------------------------------------------------------------------
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


# ---- data prep --------------------------------------------------------------------------------------------------
def captioner_choice(args, device: torch.device, budget: Budget) -> tuple[int, str]:
    """Mistral decoder layers for the LLaVA-Next captioner (32: the 7B config) and why."""
    if args.tiny:
        return 0, "tiny config (CPU test run)"
    if args.captioner_layers:
        return args.captioner_layers, "--captioner-layers"
    memory = torch.cuda.get_device_properties(device).total_memory / 2**30
    if memory < 40:
        return 8, f"8 of 32 Mistral layers: the card has {memory:.0f} GiB (< 40 GiB for 7B + activations)"
    if budget.left() < 100:
        return 8, f"8 of 32 Mistral layers: {budget.left():.0f} s of the time budget left (< 100 s)"
    return 32, "the 7B config"


def bench_dataprep(args, device: torch.device, budget: Budget) -> dict:
    layers, reason = captioner_choice(args, device, budget)
    argv = ["--device", str(device.type), "--stages", "precompute,mask,caption"]
    if args.tiny:
        argv += ["--tiny", "--images", "2", "--batch", "2", "--new-tokens", "3"]
    else:
        argv += ["--gpu", "--detector", "base", "--sam2", "l", "--images", str(args.prep_images), "--batch", "8",
                 "--captioner-layers", str(layers)]
    report = data_prep.main(argv)
    report["models"] = {"precompute": "SDXL VAE encoder at 1024 px" if not args.tiny else "tiny VAE",
                        "mask": "Grounding DINO base (Swin-B) + SAM 2.1 hiera-L" if not args.tiny else "tiny configs",
                        "caption": ("LLaVA-Next, CLIP ViT-L/14-336 + Mistral-7B width, "
                                    f"{layers} of 32 layers" if not args.tiny else "tiny LLaVA-Next")}
    report["captioner_reason"] = reason
    report["argv"] = argv
    release()
    return report


# ---- the run ----------------------------------------------------------------------------------------------------
def run_part(results: dict, name: str, fn):
    """A part that fails records its error; the others still run."""
    start = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as err:   # noqa: BLE001 -- recorded in the report, not hidden
        where = traceback.extract_tb(err.__traceback__)[-3:]
        results[name] = {"error": f"{type(err).__name__}: {err}",
                         "where": [f"{f.filename}:{f.lineno} {f.name}" for f in where]}
        print(f"{name} failed: {type(err).__name__}: {err}", flush=True)
        traceback.print_exc()
    results.setdefault("part_seconds", {})[name] = round(time.perf_counter() - start, 1)
    release()


def targets(results: dict, tiny: bool) -> list[dict]:
    rows = [r for r in results.get("train", {}).get("rows", []) if r.get("resolution") == (32 if tiny else 1024)]
    mfus = [r["mfu"] for r in rows if r.get("mfu") is not None]
    ratio = results.get("generate", {}).get("project_over_stock")
    return [{"name": "train step MFU at 1024 px (best setting)", "target": ">= 0.45",
             "value": max(mfus) if mfus else None, "met": (max(mfus) >= 0.45) if mfus else None},
            {"name": "generation, project path / stock images/s", "target": ">= 0.97 (no slower, timing noise)",
             "value": ratio, "met": None if ratio is None or tiny else ratio >= 0.97}]


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(report: dict) -> str:
    d, p = report["device"], report["peaks"]
    lines = [f"# GPU suite: {d['name']}", "",
             f"`{report['command']}` | torch {report['versions']['torch']}, "
             f"diffusers {report['versions']['diffusers']}, "
             f"transformers {report['versions']['transformers']} | {report['mode']} | {report['seconds']:.0f} s", "",
             f"Peak: datasheet dense bf16 {fmt(p['datasheet_bf16_dense_tflops'])} TFLOP/s ({p['datasheet_source']}); "
             f"measured {p['matmul']}: {fmt(p['measured_matmul_tflops'])} TFLOP/s.", "",
             "## Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|"]
    lines += [f"| {t['name']} | {t['target']} | {fmt(t['value'])} | {fmt(t['met'])} |" for t in report["targets"]]
    train = report["parts"].get("train", {})
    lines += ["", "## Train step (CocoinsStep, frozen bf16 SDXL, fp32 mapper)", ""]
    if "error" in train:
        lines.append(f"error: {train['error']}")
    else:
        lines += ["| px | batch | checkpointing | attention | compile | samples/s | s/step | model TFLOP/step | "
                  "TFLOP/s | MFU | MFU vs matmul | peak GiB | note |", "|" + "---|" * 13]
        for r in train.get("rows", []):
            note = r.get("skipped") or ("out of memory" if r.get("out_of_memory") else
                                        (f"compile {r['compile_s']} s" if "compile_s" in r else ""))
            lines.append(f"| {r['resolution']} | {r['batch']} | {fmt(r['checkpointing'])} | {r['attention']} | "
                         f"{fmt(r['compile'])} | {fmt(r.get('samples_per_s'))} | {fmt(r.get('step_s'))} | "
                         f"{fmt(r.get('model_tflop_per_step'))} | {fmt(r.get('achieved_tflops'))} | "
                         f"{fmt(r.get('mfu'))} | {fmt(r.get('mfu_vs_measured_matmul'))} | "
                         f"{fmt(r.get('peak_memory_gib'))} | {note} |")
    prof = report["parts"].get("profile", {})
    if prof:
        lines += ["", "## Where a train step's time goes (torch.profiler)", ""]
        if "error" in prof:
            lines.append(f"error: {prof['error']}")
        else:
            st = prof["setting"]
            lines += [f"{st['resolution']} px, batch {st['batch']}, {st['attention']}: wall {fmt(prof['wall_ms_per_step'])} ms "
                      f"per step, {prof['clock']} busy {fmt(prof['busy_ms_per_step'])} ms "
                      f"({fmt(prof['busy_share_of_wall'])} of the wall clock).", "",
                      "| kind | share of busy time |", "|---|---|"]
            lines += [f"| {k} | {fmt(v)} |" for k, v in prof["share_by_kind"].items()]
            lines += ["", "| top op / kernel | calls per step | ms per step |", "|---|---|---|"]
            lines += [f"| `{t['name']}` | {fmt(t['calls_per_step'])} | {fmt(t['ms_per_step'])} |" for t in prof["top"]]
    gen = report["parts"].get("generate", {})
    lines += ["", "## Generation", ""]
    if "error" in gen:
        lines.append(f"error: {gen['error']}")
    elif gen:
        lines += [f"{gen['resolution']} px, {gen['steps']} steps, guidance {gen['guidance']}, batch {gen['batch']}, "
                  f"{gen['images']} images, {fmt(gen['tflop_per_image'])} TFLOP per image (counted); project / "
                  f"stock = {fmt(gen['project_over_stock'])}", "",
                  "| path | images/s | TFLOP/s | MFU | peak GiB |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {fmt(v['images_per_s'])} | {fmt(v['achieved_tflops'])} | {fmt(v['mfu'])} | "
                  f"{fmt(v['peak_memory_gib'])} |" for name, v in gen["paths"].items()]
    prep = report["parts"].get("dataprep", {})
    lines += ["", "## Data prep (benchmarks/data_prep.py)", ""]
    if "error" in prep:
        lines.append(f"error: {prep['error']}")
    elif prep:
        lines += [f"captioner: {prep['captioner_reason']}", "",
                  "| stage | models | images | images/s | peak GiB |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {prep['models'].get(name, '')} | {s['images']} | {fmt(s['images_per_s'])} | "
                  f"{fmt(s.get('peak_gib'))} |" for name, s in prep["stages"].items()]
    return "\n".join(lines) + "\n"


def prepare_wheels(folder: Path) -> None:
    """Download (or, for the source-only releases, build here) the wheels in CARRIED_WHEELS into `folder`.
    No build isolation: sam2's build wants torch, which this venv has (an isolated build would fetch it)."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(folder),
           *CARRIED_WHEELS]
    subprocess.run(cmd, check=True, env={**os.environ, "SAM2_BUILD_CUDA": "0"})
    wheels = sorted(folder.glob("*.whl"))
    print(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 2**20:.1f} MiB in {folder}")


def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for name in ("torch", "diffusers", "transformers", "sam2"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (tests this script)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--parts", default="train,profile,generate,dataprep,compile")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 with --tiny: two threads on busy cores spin)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget for the whole suite")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the card (default: the table)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed steps per train setting (2 warm-ups)")
    parser.add_argument("--gen-steps", type=int, default=30)
    parser.add_argument("--gen-resolution", type=int, default=1024)
    parser.add_argument("--gen-batch", type=int, default=4)
    parser.add_argument("--gen-images", type=int, default=8)
    parser.add_argument("--prep-images", type=int, default=16)
    parser.add_argument("--captioner-layers", type=int, default=0, help="Mistral layers (default: 32 if it fits)")
    parser.add_argument("--prepare-wheels", type=Path, metavar="DIR", help="only fetch the wheels to carry")
    args = parser.parse_args(argv)
    if args.prepare_wheels:
        prepare_wheels(args.prepare_wheels)
        return {}
    if args.out is None:
        parser.error("--out DIR is required")
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run the suite on a GPU, or add --tiny to test it on the CPU")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.threads or args.tiny:
        torch.set_num_threads(args.threads or 1)
    budget = Budget(args.budget_s)
    parts = args.parts.split(",")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    datasheet, source = (args.peak_tflops, "--peak-tflops") if args.peak_tflops else datasheet_peak(device)
    n = 256 if args.tiny else 8192
    peaks = {"datasheet_bf16_dense_tflops": datasheet, "datasheet_source": source,
             "matmul": f"{n}^3 {str(dtype).removeprefix('torch.')} matmul",
             "measured_matmul_tflops": measure_matmul(device, dtype, n, 3 if args.tiny else 10)}
    print(f"device {name}, peaks {json.dumps(peaks)}", flush=True)
    results: dict = {}
    command = " ".join(["python benchmarks/gpu_suite.py", *(argv if argv is not None else sys.argv[1:])])
    info = {"suite": "benchmarks/gpu_suite.py", "command": command,
            "mode": "tiny configs, CPU" if args.tiny else "full size, random weights",
            "device": {"name": name, "type": device.type, "dtype": str(dtype),
                       "memory_gib": (round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
                                      if device.type == "cuda" else None)},
            "versions": versions(), "python": platform.python_version(), "peaks": peaks, "budget_s": args.budget_s}

    def write_report() -> dict:
        """After every part, so that a run stopped from outside still leaves what it measured."""
        report = {**info, "parts": results, "targets": targets(results, args.tiny), "seconds": budget.elapsed()}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "gpu_suite.md").write_text(markdown(report))
        return report

    steps, warmup = (1, 1) if args.tiny else (args.train_steps, 2)
    benches: dict = {}

    def train_bench() -> TrainBench:   # one set of full-size towers for train, profile and compile
        if "bench" not in benches:
            benches["bench"] = TrainBench(args.tiny, device, dtype, steps, warmup)
        return benches["bench"]

    if "train" in parts:   # leaves 150 s of the budget to the parts after it
        run_part(results, "train", lambda: {"rows": bench_train(train_bench(),
                                                                 TINY_TRAIN if args.tiny else FULL_TRAIN, budget,
                                                                 0.0 if args.tiny else 150.0, peaks)})
        write_report()
    if "profile" in parts:
        setting = TINY_TRAIN[0] if args.tiny else TrainSetting(1024, 4)
        run_part(results, "profile", lambda: bench_profile(train_bench(), setting))
        write_report()
    benches.clear()   # the train towers leave the card before generation and data prep load theirs
    release()
    if "generate" in parts:
        run_part(results, "generate", lambda: bench_generate(args, device, dtype, peaks))
        write_report()
    if "dataprep" in parts:
        run_part(results, "dataprep", lambda: bench_dataprep(args, device, budget))
        write_report()
    if "compile" in parts:   # last: compiling the UNet and its backward takes minutes; only with 300 s left
        if args.tiny:
            rows = [{**setting_fields(TrainSetting(32, 2, compile=True)), "skipped": "tiny CPU run: compile not timed"}]
        else:
            run_part(results, "compile", lambda: {"rows": bench_train(train_bench(),
                                                                       [FULL_COMPILE], budget, 300.0, peaks)})
            compiled = results.pop("compile")
            rows = compiled.get("rows") or [{**setting_fields(FULL_COMPILE), "error": compiled.get("error")}]
        results.setdefault("train", {}).setdefault("rows", []).extend(rows)
    report = write_report()
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
