"""What the project's generation path adds per image over stock `StableDiffusionXLPipeline`, part by part (issue 26).

    python benchmarks/generate_overhead.py                          # tiny SDXL, CPU: 8 images, batch 4, 4 steps, 32 px
    python benchmarks/generate_overhead.py --gpu --steps 30 --resolution 1024   # full-size SDXL, random weights, bf16

The project's path is the evaluation's `cocoins.eval.protocol.render` (codes from their seeds, pseudo-words through
the mapper one code at a time, `PromptEncoder.tokenize` / `.encode` with the pseudo-word, then the stock pipeline
called with `prompt_embeds`, its final latents kept); stock is the same pipeline called with the plain prompt,
same batch, seeds, steps and guidance, in the same process. Each part is timed by wrapping the function that does
it (the device synchronised around each call on a GPU, which slows both paths alike): the codes, the mapper, the
tokenizer, the text encoders (ours, or the pipeline's `encode_prompt`), the UNet (all steps), the VAE decode, the
pipeline's PIL post-processing; "rest" is the call's total minus those (scheduler, guidance, callbacks, copies).
Rounds alternate the two paths after a warm-up; each number is the median over rounds, in ms per image. On the
CPU at tiny size the UNet costs little, so the ratio overstates what the additions cost at full size on a GPU
(the target there, project / stock >= 0.97, is benchmarks/gpu_suite.py's). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from gpu_device import sync  # noqa: E402
from gpu_generate import generation_pipeline  # noqa: E402

PARTS = ("codes", "mapper", "tokenize", "text encoders", "unet", "vae decode", "PIL", "rest")


class PartTimer:
    """Wraps functions so that each call adds its wall time to a part; `take()` returns and clears the sums."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, collections.Counter()

    def wrap(self, owner, name: str, part: str) -> None:
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                sync(self.device)
                self.seconds[part] += time.perf_counter() - start

        setattr(owner, name, timed)

    def take(self) -> collections.Counter:
        taken, self.seconds = self.seconds, collections.Counter()
        return taken


def measure(args) -> dict:
    from cocoins.eval import protocol
    from cocoins.eval.prompt_sets import builtin_scene_prompts, identity_table

    device = torch.device("cuda" if args.gpu else "cpu")
    pipe, encoder, mapper = generation_pipeline(not args.gpu, device, torch.bfloat16 if args.gpu else torch.float32)
    pipe.set_progress_bar_config(disable=True)
    subjects = ("man", "woman", "boy", "girl", "person")
    jobs = protocol.make_jobs(identity_table(subjects, 8, 0), builtin_scene_prompts(subjects, 12), 1, 0)
    jobs = jobs.iloc[:args.images]
    plain = [p.replace("<subj1>", "").replace("</subj1>", "") for p in jobs["tagged"]]
    timer = PartTimer(device)
    timer.wrap(protocol, "codes_for", "codes")
    timer.wrap(protocol, "pseudo_words_one_by_one", "mapper")
    timer.wrap(encoder, "tokenize", "tokenize")
    timer.wrap(encoder, "encode", "text encoders")
    timer.wrap(pipe, "encode_prompt", "text encoders")   # stock's; on the project's path it only zeroes the negative
    timer.wrap(pipe.unet, "forward", "unet")
    timer.wrap(pipe.vae, "decode", "vae decode")
    timer.wrap(pipe.image_processor, "postprocess", "PIL")

    def project():
        protocol.render(pipe, encoder, mapper, jobs, args.steps, args.guidance, args.resolution, args.batch,
                        "project", progress=False)

    def stock():
        for start in range(0, len(jobs), args.batch):
            seeds = jobs["noise_seed"].iloc[start:start + args.batch].tolist()
            pipe(prompt=plain[start:start + args.batch], num_inference_steps=args.steps, guidance_scale=args.guidance,
                 height=args.resolution, width=args.resolution,
                 generator=[torch.Generator().manual_seed(s) for s in seeds])

    rounds: dict[str, list[dict]] = {"project": [], "stock": []}
    with torch.no_grad():
        for k in range(args.rounds + 1):   # round 0: warm-up
            for name, fn in (("project", project), ("stock", stock)):
                timer.take()
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                total = time.perf_counter() - start
                parts = timer.take()
                parts["rest"] = total - sum(parts.values())
                parts["total"] = total
                if k:
                    rounds[name].append({p: 1e3 * s / len(jobs) for p, s in parts.items()})
    return {name: {p: statistics.median(r.get(p, 0.0) for r in runs) for p in (*PARTS, "total")}
            for name, runs in rounds.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="full-size SDXL (random weights) in bf16 on CUDA")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(args)
    print(f"{'gpu' if args.gpu else 'cpu (tiny SDXL)'}: {args.images} images, batch {args.batch}, {args.steps} steps, "
          f"{args.resolution} px, guidance {args.guidance}, median of {args.rounds} rounds, ms per image")
    print(f"  {'part':14s} {'project':>9s} {'stock':>9s} {'added':>9s}")
    for part in (*PARTS, "total"):
        p, s = result["project"][part], result["stock"][part]
        print(f"  {part:14s} {p:9.2f} {s:9.2f} {p - s:+9.2f}")
    print(f"  project / stock images/s: {result['stock']['total'] / result['project']['total']:.3f}")
    return result


if __name__ == "__main__":
    main()
