"""Train-step benchmark at the tiny config: the project's batched `CocoinsStep` vs a naive reference.

    python benchmarks/train_step.py                      # batch 8 (params.yaml), 6 timed steps, CPU
    python benchmarks/train_step.py --batch-size 32 --steps 4 --device cuda

The naive reference (below) computes the same loss the textbook way: five separate UNet calls (anchor,
positive, negative with gradients; x̂1, x̂2 without) and the text encoders run once per pass (five times).
Peak memory: each variant in its own fresh process (RSS high-water mark via getrusage on CPU,
torch.cuda.max_memory_allocated on GPU). Throughput: both variants in one process, steps alternating, median
step time (robust to other jobs on a shared machine). Same batches and draws; their losses are printed to
show they compute the same thing. A torch.profiler table of the project's
step follows: the phases (record_function labels in cocoins/training/step.py) and the top ops.
Prints numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cocoins.method.losses import LossConfig, cocoins_loss, ddim_x0  # noqa: E402
from cocoins.method.mapper import Mapper, MapperConfig  # noqa: E402
from cocoins.method.triplets import TripletConfig, triplet_latents, triplet_prompts  # noqa: E402
from cocoins.training.step import Batch, CocoinsStep, DenoiserSpec, at_least_fp32, sample_generator  # noqa: E402

CAPTIONS = [("a <subj1>man</subj1> with short hair smiling at the camera", "photo of a smiling <subj1>man</subj1>"),
            ("a young <subj1>woman</subj1> with long blond hair", "the <subj1>woman</subj1> has blond hair"),
            ("an old <subj1>man</subj1> wearing glasses", "a <subj1>man</subj1> in glasses, grey hair"),
            ("a <subj1>woman</subj1> with a hat outdoors", "portrait of a <subj1>woman</subj1> wearing a hat")]


class NaiveStep(CocoinsStep):
    """Reference: the same draws and loss, with one UNet call and one text-encoder call per pass (5 each)."""

    def __call__(self, mapper, batch: Batch, step: int, total_steps: int, generators):
        z1, z2, eps1, eps2, t = self.draw(batch, generators)
        w1, w2 = mapper(z1), mapper(z2)
        anchor, positive, negative = triplet_prompts(batch.captions1, batch.captions2, self.triplet_config)
        alpha = self.spec.alphas_cumprod[t]
        x_star, x_plus, x_minus = triplet_latents(batch.latents, eps1, eps2, alpha, self.triplet_config)

        def estimate(x_t, prompts, words):
            cond = self.encoder.encode(self.encoder.tokenize(prompts, insert=words is not None), words)
            out = self._unet(x_t, t, cond.prompt_embeds, cond.pooled_prompt_embeds, batch.time_ids)
            return at_least_fp32(ddim_x0(out, x_t, alpha, self.spec.prediction_type))

        x_anchor, x_positive, x_negative = (estimate(x_star, anchor, w1), estimate(x_plus, positive, w1),
                                            estimate(x_minus, negative, w2))
        with torch.no_grad():
            x_ref1, x_ref2 = estimate(x_star, anchor, None), estimate(x_plus, positive, None)
        return cocoins_loss(x_anchor, x_positive, x_negative, x_ref1, x_ref2, batch.masks.to(x_anchor.dtype),
                            step, total_steps, self.loss_config)


def build(args):
    from cocoins.sdxl.encode import PromptEncoder
    from cocoins.sdxl.tiny import build_tiny_sdxl
    from cocoins.training.loop import freeze

    device = torch.device(args.device)
    pipe = build_tiny_sdxl(0).to(device)
    freeze(pipe)
    encoder = PromptEncoder.from_pipeline(pipe)
    torch.manual_seed(0)
    mapper = Mapper(MapperConfig(code_dim=256, layers=8, hidden_dim=256, out_dims=encoder.pseudo_word_dims)).to(device)
    spec = DenoiserSpec(pipe.scheduler.alphas_cumprod.to(device, torch.float32), pipe.scheduler.config.prediction_type)
    g = torch.Generator().manual_seed(0)
    b, side = args.batch_size, args.latent_size
    pairs = [CAPTIONS[i % len(CAPTIONS)] for i in range(b)]
    batch = Batch(torch.randn(b, 4, side, side, generator=g), (torch.rand(b, 1, side, side, generator=g) > 0.5).float(),
                  torch.tensor([[2 * side, 2 * side, 0, 0, 2 * side, 2 * side]] * b).float(),
                  [p[0] for p in pairs], [p[1] for p in pairs], torch.arange(b)).to(device)
    return pipe, encoder, mapper, spec, batch


def one_step(step_fn, mapper, optimizer, batch, k: int, total: int) -> float:
    generators = [sample_generator(0, k * batch.latents.shape[0] + i) for i in range(batch.latents.shape[0])]
    terms = step_fn(mapper, batch, k + 1, total, generators)
    terms.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return terms.loss.item()


def measure_memory(args) -> dict:
    """One variant alone in this (fresh) process: its peak memory over warm-up + timed steps, and its losses."""
    import psutil

    pipe, encoder, mapper, spec, batch = build(args)
    cls = CocoinsStep if args.variant == "project" else NaiveStep
    step_fn = cls(pipe.unet, encoder, spec, 256, LossConfig(), TripletConfig())
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=1e-4, weight_decay=0.2)
    cuda = batch.latents.is_cuda
    rss_before = psutil.Process().memory_info().rss
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    total = args.warmup + args.steps
    losses = [one_step(step_fn, mapper, optimizer, batch, k, total) for k in range(total)]
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"variant": args.variant, "peak_mb": peak / 2**20, "rss_before_steps_mb": rss_before / 2**20,
            "memory": "cuda max_memory_allocated" if cuda else "process peak RSS", "losses": losses}


def measure_speed(args) -> dict[str, float]:
    """Median seconds per step of each variant, timed alternately in one process so that a change in
    machine load (other jobs on a shared CPU) hits both the same way."""
    pipe, encoder, mapper, spec, batch = build(args)
    runs = {}
    for name, cls in (("project", CocoinsStep), ("naive", NaiveStep)):
        torch.manual_seed(0)
        own = Mapper(mapper.spec).to(batch.latents.device)
        runs[name] = (cls(pipe.unet, encoder, spec, 256, LossConfig(), TripletConfig()), own,
                      torch.optim.AdamW(own.parameters(), lr=1e-4, weight_decay=0.2), [])
    total = args.warmup + args.steps
    for k in range(total):
        for name, (step_fn, own, optimizer, times) in runs.items():
            if batch.latents.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            one_step(step_fn, own, optimizer, batch, k, total)
            if batch.latents.is_cuda:
                torch.cuda.synchronize()
            if k >= args.warmup:
                times.append(time.perf_counter() - start)
    return {name: sorted(r[3])[len(r[3]) // 2] for name, r in runs.items()}


def profile(args) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    pipe, encoder, mapper, spec, batch = build(args)
    step_fn = CocoinsStep(pipe.unet, encoder, spec, 256, LossConfig(), TripletConfig())
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=1e-4, weight_decay=0.2)
    one_step(step_fn, mapper, optimizer, batch, 0, 3)   # warm-up outside the trace
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if batch.latents.is_cuda else [])
    with torch_profile(activities=activities) as prof:
        for k in (1, 2):
            with torch.profiler.record_function("cocoins/step_total"):
                generators = [sample_generator(0, k * args.batch_size + i) for i in range(args.batch_size)]
                terms = step_fn(mapper, batch, k + 1, 3, generators)
                with torch.profiler.record_function("cocoins/backward"):
                    terms.loss.backward()
                with torch.profiler.record_function("cocoins/optimizer"):
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
    events = prof.key_averages()
    key = "cuda_time_total" if batch.latents.is_cuda else "cpu_time_total"
    phases = sorted((e for e in events if e.key.startswith("cocoins/")), key=lambda e: -getattr(e, key))
    total = next(getattr(e, key) for e in phases if e.key == "cocoins/step_total")
    print(f"\nwhere the project's step time goes (2 steps, batch {args.batch_size}, {key}):")
    for e in phases:
        print(f"  {e.key:36s} {getattr(e, key) / 1e3:9.1f} ms  {100 * getattr(e, key) / total:5.1f}%")
    sort = "self_cuda_time_total" if batch.latents.is_cuda else "self_cpu_time_total"
    print(f"\ntop ops by {sort}:")
    print(events.table(sort_by=sort, row_limit=args.profile_rows, max_name_column_width=48))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step (params.yaml: 8)")
    parser.add_argument("--latent-size", type=int, default=16, help="latent side (precompute.resolution 32 / 2)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile-rows", type=int, default=15)
    parser.add_argument("--variant", choices=["project", "naive"], help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure_memory(args)))
        return

    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, latents {args.latent_size}x{args.latent_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    memory = {}
    for variant in ("project", "naive"):
        cmd = [sys.executable, __file__, "--variant", variant] + sys.argv[1:]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if proc.returncode:
            sys.exit(f"{variant} run failed:\n{proc.stderr[-3000:]}")
        memory[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    speed = measure_speed(args)
    print(f"\n{'variant':10s} {'samples/s':>10s} {'s/step':>8s} {'peak MB':>9s} {'MB before':>10s}  memory")
    for name, m in memory.items():
        print(f"{name:10s} {args.batch_size / speed[name]:10.2f} {speed[name]:8.3f} {m['peak_mb']:9.0f} "
              f"{m['rss_before_steps_mb']:10.0f}  {m['memory']}")
    p, n = memory["project"], memory["naive"]
    print(f"\nproject / naive: throughput x{speed['naive'] / speed['project']:.2f} (median step times, "
          f"interleaved), peak memory x{p['peak_mb'] / n['peak_mb']:.2f} (own processes)")
    diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(p["losses"], n["losses"]))
    print(f"same computation: largest relative loss difference over {len(p['losses'])} steps = {diff:.1e} "
          "(float32 rounding of batched vs single kernels)")
    profile(args)


if __name__ == "__main__":
    main()
