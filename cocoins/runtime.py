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


class UserError(RuntimeError):
    """An input problem the user can fix; printed as one line without a traceback."""


def seed_everything(seed: int) -> None:
    """Fix every RNG and pick deterministic kernels, so a rerun reproduces outputs bit for bit."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


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
    """Run a stage's main(); known input problems exit 1 with one line, not a traceback."""
    try:
        main()
    except (ParamsError, UserError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
