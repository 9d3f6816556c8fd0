"""Same trained bits on another CPU (issue 14): a short mini-SDXL training in fresh processes under two simulated
CPUs (benchmarks/cpu_repro.py), unpinned and with the stages' CPU kernel pin."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from cocoins.runtime import CPU_KERNEL_PINS

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("cpu_repro", ROOT / "benchmarks" / "cpu_repro.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def has_avx2() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and " avx2" in cpuinfo.read_text()


@pytest.mark.slow
@pytest.mark.skipif(not has_avx2(), reason="the simulated second CPU is this one without AVX2: needs an AVX2 CPU")
def test_pinned_kernels_train_the_same_bits_on_a_simulated_second_cpu():
    bench = load_bench()
    args = SimpleNamespace(steps=2, corpus=16, batch=8, threads=1)
    native = {name: bench.run_probe(env, False, args) for name, env in bench.SIMULATED_CPUS.items()}
    pinned = {name: bench.run_probe(env, True, args) for name, env in bench.SIMULATED_CPUS.items()}
    # The simulation can tell CPUs apart: unpinned, the SSE4 CPU trains other weights than this one.
    assert native["SSE4 CPU"]["cpu_capability"] == "DEFAULT"
    assert native["this CPU"]["weights_sha256"] != native["SSE4 CPU"]["weights_sha256"]
    # Pinned, both run the pinned kernels and train the same bits.
    for result in pinned.values():
        assert {k: result["kernel_env"][k] for k in CPU_KERNEL_PINS} == CPU_KERNEL_PINS
    assert pinned["this CPU"]["cpu_capability"] == pinned["SSE4 CPU"]["cpu_capability"]
    assert pinned["this CPU"]["weights_sha256"] == pinned["SSE4 CPU"]["weights_sha256"]


def test_the_pin_is_opt_in_and_re_executes_with_the_pinned_variables(monkeypatch):
    from cocoins import runtime

    calls = []
    monkeypatch.setattr(runtime.os, "execve", lambda *a: calls.append(a))
    for k in CPU_KERNEL_PINS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv(runtime.CPU_KERNELS_VARIABLE, raising=False)
    runtime.pin_cpu_kernels()                                  # the default: the CPU's own kernels
    monkeypatch.setenv(runtime.CPU_KERNELS_VARIABLE, "native")
    runtime.pin_cpu_kernels()
    assert calls == []
    monkeypatch.setenv(runtime.CPU_KERNELS_VARIABLE, "pinned")
    runtime.pin_cpu_kernels()
    (executable, argv, env), = calls
    assert {k: env[k] for k in CPU_KERNEL_PINS} == CPU_KERNEL_PINS and argv[0] == executable


def test_the_probe_under_bf16_autocast_trains_other_weights_than_fp32():
    # benchmarks/cpu_repro.py --precision bf16 measures what bf16 would buy the base stage; it must really
    # change the arithmetic (the same weights would mean autocast never engaged).
    bench = load_bench()
    fp32 = bench.probe(steps=1, corpus=8, batch=4, threads=1)
    bf16 = bench.probe(steps=1, corpus=8, batch=4, threads=1, precision="bf16")
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert fp32["weights_sha256"] != bf16["weights_sha256"]
    assert bench.probe(steps=1, corpus=8, batch=4, threads=1)["weights_sha256"] == fp32["weights_sha256"]
