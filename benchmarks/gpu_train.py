"""The GPU suite's train part: the project's `CocoinsStep` on full-size (or tiny) SDXL towers over a batch sweep,
with MFU, and a profile of where one step's time goes (benchmarks/gpu_suite.py runs it)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import train_step_fullsize as fullsize  # noqa: E402
from gpu_device import Budget, peak_memory_gib, release, reset_peak, sync  # noqa: E402


@dataclass(frozen=True)
class TrainSetting:
    resolution: int
    batch: int
    checkpointing: bool = False
    attention: str = "sdpa"      # sdpa | plain (diffusers' AttnProcessor: softmax(QK^T)V materialised)
    compile: bool = False
    autocast: bool = False       # bf16 autocast around the step: the path before issue 26 (for before / after)


FULL_TRAIN = (TrainSetting(512, 8), TrainSetting(512, 16), TrainSetting(512, 24), TrainSetting(512, 32, True),
              TrainSetting(1024, 2), TrainSetting(1024, 4), TrainSetting(1024, 6), TrainSetting(1024, 8, True),
              TrainSetting(1024, 16, True), TrainSetting(1024, 4, attention="plain"))
FULL_COMPILE = TrainSetting(1024, 4, compile=True)   # the largest batch that fits without checkpointing
# --tiny: the code paths only (the batch sweep is the GPU run's)
TINY_TRAIN = (TrainSetting(32, 2), TrainSetting(32, 2, True), TrainSetting(32, 2, attention="plain"))
# --train-sweep before-after: the loop's path (no autocast) against the path before issue 26 (autocast), alternating
BEFORE_AFTER = tuple(TrainSetting(px, b, autocast=a) for px, b in ((1024, 4), (1024, 6), (512, 16))
                     for a in (True, False))
TINY_BEFORE_AFTER = (TrainSetting(32, 2, autocast=True), TrainSetting(32, 2))



def set_attention(unet, kind: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0() if kind == "sdpa" else AttnProcessor())


def setting_fields(setting: TrainSetting) -> dict:
    return {"resolution": setting.resolution, "batch": setting.batch, "checkpointing": setting.checkpointing,
            "attention": setting.attention, "compile": setting.compile, "autocast": setting.autocast}


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
        self.unet, self.tiny, self.device, self.dtype, self.steps, self.warmup = unet, tiny, device, dtype, steps, warmup
        self.step_fn = CocoinsStep(unet, PromptEncoder(tok1, tok2, te1, te2), spec, mapper_config.code_dim,
                                   LossConfig(), TripletConfig())
        self.autocast = fullsize.step_autocast(device, dtype)   # as the train loop: none for bf16 towers
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
        autocast = fullsize.step_autocast(self.device, self.dtype, setting.autocast)
        row["autocast"] = setting.autocast and self.dtype != torch.float32   # fp32 towers (tiny CPU): none ran
        try:
            if setting.checkpointing:
                self.unet.enable_gradient_checkpointing()
                row["hardware_tflop_per_step"] = self.step_tflop(latent, setting.batch)
            if setting.compile:
                self.step_fn.unet = torch.compile(self.unet)
                start = time.perf_counter()
                fullsize.run_step(self.step_fn, self.mapper, optimizer, batch, 0, autocast)
                sync(self.device)
                row["compile_s"] = round(time.perf_counter() - start, 1)
            step_s = fullsize.time_steps(self.step_fn, self.mapper, optimizer, batch,
                                         SimpleNamespace(warmup=self.warmup, steps=self.steps), autocast,
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
