"""This machine's matrix-product peak on the CPU: fp32 and bf16 GFLOP/s of torch.matmul on N threads, with the
CPU's own kernels and with the stages' pinned ones (`cocoins.runtime.CPU_KERNEL_PINS`). The ceiling that the
per-stage FLOP rates of the embedded default are read against (issue 14).

    python benchmarks/cpu_peak.py                        # 2 threads, best of 5 runs, writes benchmarks/results/
    python benchmarks/cpu_peak.py --threads 1 --runs 3 --out /tmp/peak

Each (dtype, kernels) setting runs in its own process (the libraries read their kernel variables once), --runs
times, interleaved; the best run is reported, since other work on a shared machine only ever slows a run down.
A run: square products of side --size, repeated for --seconds after one warm-up, FLOPs = 2 n^3 per product.
Writes cpu_peak-<cpu>.json and cpu_peak-<cpu>.md (the table and the command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = [(dtype, kernels) for dtype in ("fp32", "bf16") for kernels in ("native", "pinned")]
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "COCOINS_CPU_KERNELS")


def worker(dtype_name: str, threads: int, size: int, seconds: float) -> dict:
    import torch

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(dtype) for _ in range(2))
    a @ b
    products, start = 0, time.perf_counter()
    while products == 0 or time.perf_counter() - start < seconds:
        a @ b
        products += 1
    elapsed = time.perf_counter() - start
    return {"gflops": 2 * size**3 * products / elapsed / 1e9, "products": products, "seconds": elapsed,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}


def cpu_description() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", info)
    flags = set((re.search(r"flags\s*:\s*(.+)", info) or re.search("(.*)", "")).group(1).split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")
    return {"model": model.group(1).strip() if model else platform.processor() or "unknown",
            "cores": os.cpu_count(), "isa": [f for f in wanted if f in flags]}


def cpu_slug(cpu: dict) -> str:
    """The CPU model as a file-name part of the results (`amd-epyc`)."""
    return re.sub(r"[^a-z0-9]+", "-", cpu["model"].lower()).strip("-")


def run_setting(dtype: str, kernels: str, args) -> dict:
    from cocoins.runtime import CPU_KERNEL_PINS

    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    if kernels == "pinned":
        env.update(CPU_KERNEL_PINS)
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", dtype, "--threads", str(args.threads),
           "--size", str(args.size), "--seconds", str(args.seconds)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    cpu = report["cpu"]
    lines = [f"# CPU matmul peak: {cpu['model']} ({cpu['cores']} cores; {', '.join(cpu['isa'])})", "",
             f"`{report['command']}` (torch {report['torch']}; {report['threads']} threads, {report['size']}^3 "
             f"products, best of {report['runs']} runs per setting). {report['note']}", "",
             "| dtype | kernels | GFLOP/s (best) | all runs |", "|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['dtype']} | {r['kernels']} | {r['best_gflops']:.1f} | "
                     f"{', '.join(f'{g:.1f}' for g in r['runs_gflops'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--worker", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.size, args.seconds)))
        return {}
    runs: dict[tuple[str, str], list[dict]] = {s: [] for s in SETTINGS}
    for _ in range(args.runs):
        for setting in SETTINGS:
            runs[setting].append(run_setting(*setting, args))
            print(setting, f"{runs[setting][-1]['gflops']:.1f} GFLOP/s", flush=True)
    cpu = cpu_description()
    results = [{"dtype": d, "kernels": k, "best_gflops": max(r["gflops"] for r in rs),
                "runs_gflops": [r["gflops"] for r in rs], "cpu_capability": rs[0]["cpu_capability"]}
               for (d, k), rs in runs.items()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report = {"command": "python benchmarks/cpu_peak.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
              "cpu": cpu, "torch": runs[SETTINGS[0]][0]["torch"], "threads": args.threads, "size": args.size,
              "runs": args.runs, "results": results, "load_average_1min_at_end": load,
              "note": (f"The machine is shared: load average {load:.1f} on {cpu['cores']} cores at the end, so these "
                       "are lower bounds of the peak." if load is not None else "")}
    slug = cpu_slug(cpu)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"cpu_peak-{slug}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"cpu_peak-{slug}.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
