"""The same trained bits on another x86-64 CPU: what the CPU kernel pin (`cocoins.runtime.CPU_KERNEL_PINS`)
does to a short mini-SDXL training, and what it costs.

    python benchmarks/cpu_repro.py                 # each simulated CPU, unpinned and pinned: weights + CPU s/step
    python benchmarks/cpu_repro.py --probe --steps 2 --corpus 32 --batch 8    # one run (what the test runs)
    python benchmarks/cpu_repro.py --probe --precision bf16 --steps 12 --corpus 64 --batch 32   # under bf16 autocast
    python benchmarks/cpu_repro.py --probe --steps 1 --corpus 16 --batch 8 --pin --trace T.tsv.gz   # a hash per op
    python benchmarks/cpu_repro.py --compare A.tsv.gz B.tsv.gz   # the first op whose output differs, two CPUs

A trace (`--trace`) holds one line per ATen op the training ran, forward and backward, in order: its index, its
name and the sha256 (first 16 hex digits) of its outputs' bytes. Two traces of the same command from two CPUs
name the first op whose bits differ (`--compare`); benchmarks/results/ holds each measured CPU's.

A second CPU is simulated on this one by the variables that cap each library's instruction-set dispatch (ATen's
vectorised kernels, oneDNN's convolutions, MKL's GEMM branch): a CPU with fewer instructions makes the same
choice natively. Each run is its own process (the libraries read the variables once). Unpinned, the simulated
CPUs train different weights; pinned (`pin_cpu_kernels()` under COCOINS_CPU_KERNELS=pinned, as every stage
does then before its main), the same.

Speed: process CPU seconds per training step (one thread), so that other work on a shared machine disturbs
the comparison less than wall time would; the best of --repeats runs per setting.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The simulated CPUs: this one as it is, and one that has neither AVX2 for ATen nor AVX for oneDNN.
SIMULATED_CPUS = {
    "this CPU": {},
    "SSE4 CPU": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "SSE4_2"},
}
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "COCOINS_CPU_KERNELS")


class OpTrace:
    """A TorchDispatchMode that hashes every ATen op's outputs as the op runs (forward and backward alike)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        trace = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                trace.record(str(func), out)
                return out

        self.mode, self.lines = Mode(), []

    def record(self, name: str, out) -> None:
        import torch
        from torch.utils._pytree import tree_leaves

        digest = hashlib.sha256()
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                digest.update(leaf.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        self.lines.append(f"{len(self.lines)}\t{name}\t{digest.hexdigest()[:16]}")


def read_trace(path: str | Path) -> list[str]:
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return f.read().splitlines()


def compare_traces(a: list[str], b: list[str]) -> str:
    """Where two traces part: the first op with another name (another code path) or other output bits."""
    for line_a, line_b in zip(a, b):
        if line_a != line_b:
            _, op_a, hash_a = line_a.split("\t")
            _, op_b, hash_b = line_b.split("\t")
            index = line_a.split("\t")[0]
            if op_a != op_b:
                return f"op {index}: another op ({op_a} against {op_b}); the CPUs took other code paths"
            before = "; the ops before it agree" if index != "0" else ""
            return f"op {index} ({op_a}): other output bits ({hash_a} against {hash_b}){before}"
    if len(a) != len(b):
        return f"the same bits for {min(len(a), len(b))} ops, then one trace ends ({len(a)} against {len(b)} ops)"
    return f"the same bits for all {len(a)} ops"


def probe(steps: int, corpus: int, batch: int, threads: int, precision: str = "fp32",
          trace: str | None = None) -> dict:
    """A short mini-SDXL training (VAE, then UNet + text encoders); sha256 of the saved weights and CPU s/step.

    precision "bf16": the whole training under CPU bf16 autocast (matmuls and convolutions in bf16, the losses
    and the fp32 weights and optimizer as they are), to measure what bf16 would buy the base stage."""
    import torch

    from cocoins.runtime import seed_everything
    from cocoins.world import pretrain

    torch.set_num_threads(threads)
    seed_everything(0)
    cpu: dict[str, float] = {}
    for phase in ("train_vae", "train_unet"):   # time each phase by wrapping it where train_mini_sdxl finds it
        original = getattr(pretrain, phase)

        def timed(*a, _original=original, _phase=phase, **k):
            start = time.process_time()
            out = _original(*a, **k)
            cpu[_phase] = (time.process_time() - start) / steps
            return out
        setattr(pretrain, phase, timed)
    cfg = pretrain.MiniTrainConfig(corpus_images=corpus, vae_steps=steps, vae_batch=batch, unet_steps=steps,
                                   unet_batch=batch, warmup_steps=1)
    digest = hashlib.sha256()
    ops = OpTrace() if trace else None
    with tempfile.TemporaryDirectory() as tmp:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if ops is not None:
                with ops.mode:
                    pretrain.train_mini_sdxl(tmp, cfg)
            else:
                pretrain.train_mini_sdxl(tmp, cfg)
        for path in sorted(Path(tmp).rglob("*.safetensors")):
            digest.update(path.read_bytes())
    if ops is not None:
        import gzip

        with gzip.open(trace, "wt") as f:
            f.write("\n".join(ops.lines) + "\n")
    return {"weights_sha256": digest.hexdigest(), "cpu_s_per_step": cpu,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "precision": precision,
            "mkldnn_enabled": torch.backends.mkldnn.enabled,
            "kernel_env": {k: os.environ.get(k) for k in KERNEL_VARIABLES}}


def run_probe(cpu_env: dict, pinned: bool, args) -> dict:
    """One probe in a fresh process whose environment simulates `cpu_env`; pinned: it pins as a stage does."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    env.update(cpu_env, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", "--steps", str(args.steps), "--corpus",
           str(args.corpus), "--batch", str(args.batch), "--threads", str(args.threads)]
    if pinned:
        cmd.append("--pin")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"probe failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", action="store_true", help="run one probe in this process, print its JSON")
    parser.add_argument("--pin", action="store_true", help="with --probe: pin the kernels first, as stages do")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--corpus", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32, help="VAE and UNet batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting; the fastest is reported")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="with --probe: fp32, or the training under CPU bf16 autocast")
    parser.add_argument("--trace", help="with --probe: write a hash after every op to this file (.tsv.gz)")
    parser.add_argument("--no-mkldnn", action="store_true",
                        help="with --probe: torch.backends.mkldnn off (oneDNN's convolutions replaced by ATen's)")
    parser.add_argument("--compare", nargs=2, metavar=("TRACE_A", "TRACE_B"),
                        help="name the first op where two --trace files differ")
    args = parser.parse_args(argv)
    if args.compare:
        print(compare_traces(*(read_trace(path) for path in args.compare)))
        return
    if args.probe:
        if args.pin:
            from cocoins.runtime import CPU_KERNELS_VARIABLE, pin_cpu_kernels

            os.environ[CPU_KERNELS_VARIABLE] = "pinned"   # what a user sets to pin every stage
            pin_cpu_kernels()
        if args.no_mkldnn:
            import torch

            torch.backends.mkldnn.enabled = False
        print(json.dumps(probe(args.steps, args.corpus, args.batch, args.threads, args.precision, args.trace)))
        return
    results = {}
    for _ in range(args.repeats):
        for pinned in (False, True):
            for name, cpu_env in SIMULATED_CPUS.items():
                r = run_probe(cpu_env, pinned, args)
                key = (name, pinned)
                best = results.get(key)
                if best is None or sum(r["cpu_s_per_step"].values()) < sum(best["cpu_s_per_step"].values()):
                    results[key] = r
    print(f"mini SDXL, {args.steps} VAE + {args.steps} UNet steps at batch {args.batch}, {args.threads} thread(s), "
          f"best of {args.repeats}; CPU seconds per step")
    print("| simulated CPU | kernels | VAE s/step | UNet s/step | weights sha256 |")
    print("|---|---|---|---|---|")
    for (name, pinned), r in results.items():
        kernels = "pinned" if pinned else "native (" + (", ".join(f"{k}={v}" for k, v in SIMULATED_CPUS[name].items())
                                                        or "no caps") + ")"
        print(f"| {name} | {kernels} | {r['cpu_s_per_step']['train_vae']:.3f} | "
              f"{r['cpu_s_per_step']['train_unet']:.3f} | {r['weights_sha256'][:16]} |")


if __name__ == "__main__":
    main()
