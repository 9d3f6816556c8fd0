"""Process-level set-up shared by stages and the CLI: determinism, devices, summaries, clean errors."""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from typing import Callable

import numpy as np
import torch

from cocoins.config import ParamsError


# Which kernels the CPU libraries run, when COCOINS_CPU_KERNELS=pinned: fixed at a level every x86-64 CPU with
# AVX2 has: ATen's vectorised kernels (random draws, elementwise ops, reductions) and oneDNN's convolutions capped
# at AVX2, MKL on its conditional-numerical-reproducibility branch COMPATIBLE. Each library reads its variable
# once, before its first kernel: hence a re-exec. What it buys, measured (benchmarks/results/cpu_repro-probe-*):
# the same bits under two simulated CPUs on one machine (tests/test_cpu_repro.py), but NOT across real CPUs: the
# pinned probe trained three different hashes on an AVX2 EPYC, an AVX-512 EPYC and an AVX-512/AMX Xeon (with
# MKL_CBWR=COMPATIBLE,STRICT too). So across CPU models a run is the same within the effect test's statistics,
# not bit for bit; `cpu_repro.py --trace/--compare` names the first op that differs. Not the default: the mini
# UNet's training step costs 1.5x the CPU's own kernels; by default a run is the same bits on the same CPU model
# and thread count only (README, "Reproducibility").
CPU_KERNEL_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
CPU_KERNELS_VARIABLE = "COCOINS_CPU_KERNELS"   # pinned: the kernels above; anything else: the CPU's own


class UserError(RuntimeError):
    """An input problem the user can fix; printed as one line without a traceback."""


def threads_per_process(processes: int) -> int:
    """Torch threads for each of `processes` CPU processes sharing the cores this process may use (its CPU
    affinity on Linux, else every core), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes))


def seed_everything(seed: int) -> None:
    """Fix every RNG and pick deterministic kernels, so a rerun reproduces outputs bit for bit."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pin_cpu_kernels() -> None:
    """With COCOINS_CPU_KERNELS=pinned, run this process under CPU_KERNEL_PINS: if its environment lacks them,
    re-exec the same command with them (before any kernel ran, nothing is lost). Otherwise do nothing."""
    if os.environ.get(CPU_KERNELS_VARIABLE) != "pinned":
        return
    if all(os.environ.get(k) == v for k, v in CPU_KERNEL_PINS.items()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **CPU_KERNEL_PINS})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA GPU is visible; set the device param to auto or cpu")
    return torch.device(name)


def print_summary(stage: str, kept: int, skipped: Counter | dict, extra: dict | None = None) -> None:
    """The one-screen summary every stage ends with: what it kept, what it skipped and why."""
    total_skipped = sum(skipped.values())
    print(f"[{stage}] kept {kept}, skipped {total_skipped}")
    for reason, count in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"[{stage}]   skipped {count}: {reason}")
    for key, value in (extra or {}).items():
        print(f"[{stage}] {key}: {value}")


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main() (on the pinned CPU kernels with COCOINS_CPU_KERNELS=pinned); known input problems
    exit 1 with one line, not a traceback."""
    pin_cpu_kernels()
    try:
        main()
    except (ParamsError, UserError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)

