"""The card under the GPU suite: its datasheet peak, a matmul measured in the same run, peak memory, and the
suite's wall-clock budget (benchmarks/gpu_suite.py)."""

from __future__ import annotations

import gc
import time

import torch

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s; matched in this order
# against torch.cuda.get_device_name() (the PCIe / NVL parts before the SXM name they contain).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0),
                    ("H100", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0),
                    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0))


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
