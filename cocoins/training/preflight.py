"""What the train stage needs before its first step: the base model, a batch layout, and memory for it.

The memory rule comes from the full-size train step measured on an H200 (`benchmarks/results/gpu_suite-h200.md`,
frozen bf16 SDXL UNet, SDPA): peak GiB grew by about 19.3 per sample at 1024 px without gradient checkpointing
(2 samples 45.1, 4 samples 83.4, 6 samples 122) and by 2.5 with it (8 samples 26.6, 16 samples 46.6), over
about 7 GiB of weights and workspace; activations scale with the latent area, so (px / 1024)^2 of that at
another resolution. It is an estimate for SDXL's UNet, so only a hub id or directory is checked against it.
"""

from __future__ import annotations

import shlex

from cocoins.checks import model_problems
from cocoins.config import Params

FIXED_GIB = 7.0
GIB_PER_SAMPLE_1024 = {False: 19.3, True: 2.5}   # gradient checkpointing off / on
HEADROOM = 0.92                                   # leave the allocator's fragmentation and NCCL buffers room


def launched_processes(launcher: str, visible_gpus: int) -> int:
    """How many processes `launcher` starts: `python` one; `accelerate launch` its --num_processes, else one
    per visible GPU (accelerate's default without a config file), at least one."""
    words = shlex.split(launcher)
    if words[:2] != ["accelerate", "launch"]:
        return 1
    for i, word in enumerate(words):
        if word == "--num_processes" and i + 1 < len(words):
            return int(words[i + 1])
        if word.startswith("--num_processes="):
            return int(word.split("=", 1)[1])
    return max(1, visible_gpus)


def step_memory_gib(micro_batch: int, resolution: int, checkpointing: bool) -> float:
    """Estimated peak GPU memory of one SDXL train pass of `micro_batch` samples (see the module docstring)."""
    return FIXED_GIB + GIB_PER_SAMPLE_1024[checkpointing] * micro_batch * (resolution / 1024) ** 2


def train_problems(params: Params, world: int, gpu_gib: float | None = None) -> list[str]:
    """One line per reason the train stage would fail or run out of memory, with the fix.

    Args:
        params: the whole params (train, precompute.resolution and models.sdxl are read).
        world: processes the stage runs as.
        gpu_gib: memory of one GPU; None asks torch when CUDA is visible (no check without a GPU).
    """
    t, problems = params.train, []
    sdxl = params.models.sdxl
    if sdxl not in ("mini", "tiny"):
        problems += model_problems(sdxl, "models.sdxl", "model_index.json")
    if t.micro_batch_size is not None:
        if t.batch_size % (world * t.micro_batch_size):
            problems.append(f"train.batch_size {t.batch_size} does not divide into {world} process(es) x "
                            f"train.micro_batch_size {t.micro_batch_size}; pick a micro-batch that divides "
                            f"{t.batch_size / world:g}")
        micro = t.micro_batch_size
    else:
        parts = world * t.gradient_accumulation_steps
        if t.batch_size % parts:
            problems.append(f"train.batch_size {t.batch_size} does not divide into {world} process(es) x "
                            f"train.gradient_accumulation_steps {t.gradient_accumulation_steps}; set "
                            "train.micro_batch_size instead, which fits any number of processes")
        micro = max(1, t.batch_size // parts)
    import torch

    cuda = torch.cuda.is_available()
    if t.device == "cuda" and not cuda:
        problems.append("train.device is cuda but no CUDA GPU is visible; set train.device: auto or cpu")
    if t.mixed_precision == "fp16" and not cuda:
        problems.append("train.mixed_precision fp16 needs a CUDA GPU; use bf16 or fp32 here")
    if gpu_gib is None and cuda and t.device != "cpu" and sdxl not in ("mini", "tiny"):   # only SDXL is sized
        gpu_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    if gpu_gib is not None and sdxl not in ("mini", "tiny"):
        need = step_memory_gib(micro, params.precompute.resolution, t.gradient_checkpointing)
        if need > HEADROOM * gpu_gib:
            per = GIB_PER_SAMPLE_1024[t.gradient_checkpointing] * (params.precompute.resolution / 1024) ** 2
            fits = max(0, int((HEADROOM * gpu_gib - FIXED_GIB) // per))
            fix = ("set train.gradient_checkpointing: true" if not t.gradient_checkpointing else
                   f"set train.micro_batch_size to {fits} or less")
            problems.append(f"train: {micro} samples per pass at {params.precompute.resolution} px "
                            f"{'with' if t.gradient_checkpointing else 'without'} gradient checkpointing need about "
                            f"{need:.0f} GiB per GPU (estimate from the H200 measurement) and this GPU has "
                            f"{gpu_gib:.0f} GiB; {fix}")
    return problems
