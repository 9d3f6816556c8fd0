"""The FLOP rate each heavy stage of the embedded default reaches on this CPU, against this CPU's matmul peak
(issue 14). Every step runs through the library's own function at the sizes and thread counts params.yaml sets:

    base      mini VAE step (`train_vae`) and UNet + text-encoder step (`train_unet`, trained token rows)
    identity  trait-classifier step (`train_trait_classifier`, half of each batch through the VAE)
    train     the CoCoIns step (`CocoinsStep`, Eq. 9) and the mapper's AdamW update
    evaluate  one rendering batch (`generate`: eval.batch_size images, eval.steps steps, CFG)

    python benchmarks/stage_flops.py                        # writes benchmarks/results/stage_flops-<cpu>.{json,md}
    python benchmarks/stage_flops.py --steps 2 --out /tmp/f    # quick look
    python benchmarks/stage_flops.py --profile 12            # and each step's 12 costliest ops
    python benchmarks/stage_flops.py --stage-times T.json   # T.json from `benchmarks/pipeline.py --per-stage`:
                                                            # adds each stage's whole-run FLOP rate

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode on one step (matmuls, convolutions, attention:
forward and backward; elementwise work and the optimizer are not counted, so the rates are of the counted
work). A step is a run of 1 + n steps minus a run of 1 (what a phase sets up before its loop, such as the trait
classifier's rendered and reconstructed training images, is done once per stage, not per step). Time: best of
--repeats runs each, after one warm-up run; weights random (neither FLOPs nor time depend on their values). The peak is torch.matmul on square fp32 products in the same process and
threads (as `benchmarks/cpu_peak.py`). A stage's whole-run rate divides steps x FLOPs per step by the stage's
wall time, which also holds what is not a step (rendering the corpus, loading, saving, scoring).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_peak import cpu_description, cpu_slug, worker as matmul_run  # noqa: E402


# A phase's run(n) may set up before its n steps (the trait classifier renders and reconstructs its training
# images, the UNet phase copies the EMA model): a step is measured as run(1 + n) minus run(1).

def count_flops(run: Callable[[int], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    totals = []
    for n in (1, 2):
        with FlopCounterMode(display=False) as counter:
            run(n)
        totals.append(counter.get_total_flops())
    return totals[1] - totals[0]


def seconds_per_step(run: Callable[[int], None], steps: int, repeats: int) -> float:
    run(1)   # warm-up: allocator, oneDNN primitive caches

    def best(n: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(n)
            times.append(time.perf_counter() - start)
        return min(times)

    return max(best(1 + steps) - best(1), 1e-9) / steps


def profile_ops(run: Callable[[int], None], top: int) -> list[dict]:
    """The ops that take the CPU time of a run of 3 steps (set-up included), by self time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(3)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def mini_architecture(params):
    """The mini SDXL as the base stage builds it (its prompt window from params.yaml's mini group)."""
    from cocoins.world.mini_sdxl import MiniArchitecture

    return MiniArchitecture(text_context=params.mini.text_context)


def base_phases(params, tiny: bool) -> dict[str, tuple[Callable[[int], None], int]]:
    from cocoins.world.mini_sdxl import build_mini_sdxl
    from cocoins.world.pretrain import MiniTrainConfig, encode_latents, render_corpus, train_unet, train_vae

    m = params.mini
    cfg = MiniTrainConfig(**{f.name: getattr(m, f.name) for f in dataclasses.fields(MiniTrainConfig)
                             if hasattr(m, f.name)})
    if tiny:
        cfg = dataclasses.replace(cfg, vae_batch=4, unet_batch=4)
    # A corpus of one UNet batch: what a step costs does not depend on how many images it draws from.
    small = dataclasses.replace(cfg, corpus_images=cfg.unet_batch, named_people=4 if cfg.named_people else 0,
                                named_images=1)
    arch = mini_architecture(params)
    corpus = render_corpus(small, arch.image_size)
    pipe = build_mini_sdxl(arch, seed=0)
    gen = torch.Generator().manual_seed(0)
    latents = encode_latents(pipe.vae, corpus.images)

    def vae(steps: int) -> None:
        train_vae(pipe.vae, corpus.images, dataclasses.replace(cfg, vae_steps=steps), gen)

    def unet(steps: int) -> None:
        train_unet(pipe, latents, corpus.captions, dataclasses.replace(cfg, unet_steps=steps), gen)

    return {"base: VAE step": (vae, cfg.vae_steps), "base: UNet + text encoders step": (unet, cfg.unet_steps)}


def identity_phase(params, tiny: bool) -> dict[str, tuple[Callable[[int], None], int]]:
    from cocoins.world.mini_sdxl import build_mini_sdxl
    from cocoins.world.traits import train_trait_classifier, vae_round_trip

    p = params.identity
    batch = 4 if tiny else p.batch_size
    reconstruct = vae_round_trip(build_mini_sdxl(mini_architecture(params), seed=0).vae)

    def step(steps: int) -> None:
        train_trait_classifier(seed=p.seed, steps=steps, train_images=batch, batch_size=batch,
                               image_size=p.image_size, progress=False, reconstruct=reconstruct,
                               reconstruct_share=p.reconstruct_share)

    return {"identity: trait classifier step": (step, p.steps)}


def train_phase(params, tiny: bool) -> dict[str, tuple[Callable[[int], None], int]]:
    from cocoins.method.losses import LossConfig
    from cocoins.method.mapper import Mapper, MapperConfig
    from cocoins.method.triplets import TripletConfig
    from cocoins.sdxl.encode import PromptEncoder
    from cocoins.training.loop import freeze
    from cocoins.training.step import Batch, CocoinsStep, DenoiserSpec, sample_generator
    from cocoins.world.mini_sdxl import build_mini_sdxl

    t, m, arch = params.train, params.mapper, mini_architecture(params)
    pipe = build_mini_sdxl(arch, seed=0)
    freeze(pipe)
    encoder = PromptEncoder.from_pipeline(pipe)
    mapper = Mapper(MapperConfig(code_dim=m.code_dim, layers=m.layers, hidden_dim=m.hidden_dim,
                                 out_dims=tuple(encoder.pseudo_word_dims)))
    loss_config = LossConfig(**{f.name: getattr(params.loss, f.name) for f in dataclasses.fields(LossConfig)})
    step_fn = CocoinsStep(pipe.unet, encoder, DenoiserSpec(pipe.scheduler.alphas_cumprod.float(),
                                                           pipe.scheduler.config.prediction_type),
                          m.code_dim, loss_config, TripletConfig(**dataclasses.asdict(params.triplet)))
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    b, side = (4 if tiny else t.batch_size), pipe.unet.config.sample_size
    g = torch.Generator().manual_seed(0)
    size = arch.image_size
    batch = Batch(torch.randn(b, 4, side, side, generator=g), (torch.rand(b, 1, side, side, generator=g) > 0.5).float(),
                  torch.tensor([[size, size, 0, 0, size, size]] * b).float(),
                  ["a photo of a <subj1>woman</subj1> in a green park"] * b,
                  ["a <subj1>woman</subj1> with long hair on a beach"] * b, torch.arange(b))

    def step(steps: int) -> None:
        for k in range(steps):
            generators = [sample_generator(0, k * b + i) for i in range(b)]
            step_fn(mapper, batch, k + 1, max(steps, 2), generators).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return {"train: CoCoIns step": (step, t.steps)}


def evaluate_phase(params, tiny: bool) -> dict[str, tuple[Callable[[int], None], int]]:
    from cocoins.sdxl.encode import PromptEncoder
    from cocoins.sdxl.generate import generate
    from cocoins.world.mini_sdxl import build_mini_sdxl

    e = params.eval
    pipe = build_mini_sdxl(mini_architecture(params), seed=0)
    encoder = PromptEncoder.from_pipeline(pipe)
    b, steps_per_image = (2 if tiny else e.batch_size), (2 if tiny else e.steps)
    prompts = ["a photo of a <subj1>woman</subj1> in a green park"] * b

    def render(batches: int) -> None:
        for k in range(batches):
            generate(pipe, encoder, prompts, None, list(range(k * b, (k + 1) * b)), steps_per_image, e.guidance,
                     e.resolution, e.resolution, output_type="pil")

    return {"evaluate: one rendering batch": (render, 0)}


STAGES = {"base": (base_phases, "mini"), "identity": (identity_phase, "identity"),
          "train": (train_phase, None), "evaluate": (evaluate_phase, "eval")}


def main(argv: list[str] | None = None) -> dict:
    from cocoins.config import load_params

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stage-times", type=Path, help="JSON of `benchmarks/pipeline.py --per-stage --json`")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tiny", action="store_true", help="batches of a few images (the test suite's run)")
    parser.add_argument("--threads", type=int, help="one thread count for every stage instead of the stages' own")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also list each step's top N ops")
    parser.add_argument("--stages", help=f"comma-separated, of {', '.join(STAGES)} (default: all)")
    parser.add_argument("--text-context", type=int, help="the mini SDXL's prompt window instead of params.yaml's")
    args = parser.parse_args(argv)
    params = load_params(ROOT / "params.yaml")
    if args.text_context:
        params = dataclasses.replace(params, mini=dataclasses.replace(params.mini, text_context=args.text_context))
    chosen = args.stages.split(",") if args.stages else list(STAGES)
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    stage_times = json.loads(args.stage_times.read_text())["stages"] if args.stage_times else {}
    rows, peaks, default_threads = [], {}, torch.get_num_threads()
    for stage, (build, group) in ((k, v) for k, v in STAGES.items() if k in chosen):
        # The stage's own thread count (train sets none: torch's default, one per core).
        threads = args.threads or (getattr(params, group).cpu_threads if group else default_threads)
        if threads not in peaks:
            peaks[threads] = matmul_run("fp32", threads, 512, 0.2 if args.tiny else 2.0)["gflops"]
        torch.set_num_threads(threads)
        for name, (run, stage_steps) in build(params, args.tiny).items():
            torch.manual_seed(0)
            flops = count_flops(run)
            seconds = seconds_per_step(run, args.steps, args.repeats)
            rows.append({"stage": stage, "step": name, "threads": threads, "gflop_per_step": flops / 1e9,
                         "seconds_per_step": seconds, "gflops": flops / seconds / 1e9,
                         "of_peak": flops / seconds / 1e9 / peaks[threads], "stage_steps": stage_steps})
            if args.profile:
                rows[-1]["top_ops"] = profile_ops(run, args.profile)
            print(f"{name:<36} {threads} threads  {flops / 1e9:9.3f} GFLOP  {seconds * 1e3:9.1f} ms  "
                  f"{rows[-1]['gflops']:7.2f} GFLOP/s  {rows[-1]['of_peak']:.0%} of peak")
    whole = {}
    for stage, seconds in stage_times.items():
        counted = sum(r["gflop_per_step"] * r["stage_steps"] for r in rows if r["stage"] == stage)
        if counted:
            whole[stage] = {"seconds": seconds, "gflop": counted, "gflops": counted / seconds}
    result = {"cpu": cpu_description(), "torch": torch.__version__, "command": " ".join(["python",
              "benchmarks/stage_flops.py", *(argv if argv is not None else sys.argv[1:])]),
              "matmul_peak_gflops": {str(k): v for k, v in peaks.items()}, "steps": rows, "stages": whole}
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "tiny" if args.tiny else cpu_slug(result["cpu"])
    (args.out / f"stage_flops-{tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"stage_flops-{tag}.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    cpu = result["cpu"]
    lines = [f"# FLOP rate of the embedded default's heavy stages: {cpu['model']} ({cpu['cores']} cores; "
             f"{', '.join(cpu['isa'])})", "", f"`{result['command']}` (torch {result['torch']}). fp32 matmul peak "
             "(512^3, same process): " + ", ".join(f"{v:.1f} GFLOP/s on {k} threads"
                                                  for k, v in result["matmul_peak_gflops"].items()) + ".", "",
             "| step | threads | GFLOP / step | ms / step | GFLOP/s | of peak | steps in the stage |",
             "|---|---|---|---|---|---|---|"]
    for r in result["steps"]:
        lines.append(f"| {r['step']} | {r['threads']} | {r['gflop_per_step']:.3f} | {r['seconds_per_step'] * 1e3:.1f} | "
                     f"{r['gflops']:.2f} | {r['of_peak']:.0%} | {r['stage_steps'] or '-'} |")
    for r in result["steps"]:
        if "top_ops" in r:
            lines += ["", f"{r['step']}: top ops by self CPU time (a run of 3 steps, set-up included; torch.profiler)", "",
                      "| op | calls | self ms | share |", "|---|---|---|---|"]
            lines += [f"| `{o['op']}` | {o['calls']} | {o['self_ms']:.1f} | {o['share']:.0%} |" for o in r["top_ops"]]
    if result["stages"]:
        lines += ["", "Whole stages (steps x FLOPs per step over the stage's wall time in a cold `dvc repro`):", "",
                  "| stage | wall s | counted GFLOP | GFLOP/s |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['seconds']:.0f} | {v['gflop']:.0f} | {v['gflops']:.2f} |"
                  for k, v in result["stages"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
