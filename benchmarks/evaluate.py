"""Evaluation benchmark: time and peak memory of the `evaluate` stage on the embedded default, and images/s of
generation (the evaluation protocol's batched rendering with pseudo-words). Prints numbers; asserts nothing.

    python benchmarks/evaluate.py                               # stage on the embedded default + tiny CPU images/s
    python benchmarks/evaluate.py --no-stage --batch-sizes 1 8  # only the tiny generation throughput
    python benchmarks/evaluate.py --gpu --batch-sizes 1 4 8 --steps 30 --resolution 1024   # full-size SDXL

The stage runs in a temporary copy of the project, on this checkout's data/eval, models/base and
models/mapper when they exist (else `dvc repro prompts train` first, not timed). --gpu builds SDXL base's
UNet and text encoders from their published configs with random weights (benchmarks/train_step_fullsize.py)
plus the published SDXL VAE config, in bf16 on CUDA, and a full-size mapper (c = 256, n = 8, 1024 wide).

Measured (2-core shared CPU, torch 2.14.1, no GPU lent; `python benchmarks/evaluate.py`):
    evaluate stage (embedded default): 22.2 s wall, peak RSS 1514 MB, 180 images rendered and scored
    tiny generation, 4 steps at 32 px: 9.6 images/s (batch 1), 18.9 (batch 8), 15.1 (batch 32)
The stage took 83 s before eval.cpu_threads (torch's 2 threads on 2 busy cores: ~35x slower per batch).
GPU numbers: not measured yet (`--gpu` is ready for a lent device).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# stabilityai/stable-diffusion-xl-base-1.0, vae/config.json
SDXL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu", norm_num_groups=32, scaling_factor=0.13025,
                force_upcast=True)


def copy_project(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("data/", "models/", "reports/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)


def bench_stage(env: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_project(work)
        env = {**env, "PYTHONPATH": str(work)}
        inputs = ("data/eval", "models/base", "models/mapper")
        if all((ROOT / p).exists() for p in inputs):
            for p in inputs:
                shutil.copytree(ROOT / p, work / p)
            print(f"inputs: {', '.join(inputs)} copied from {ROOT}")
        else:
            print("inputs: running `dvc repro prompts train` in the copy first (not timed)")
            subprocess.run("git init -q && git add -A && git -c user.name=b -c user.email=b@b commit -qm b && "
                           "dvc repro -q prompts train", shell=True, cwd=work, env=env, check=True)
        # A wrapper process, so ru_maxrss of its children is the stage's own peak.
        wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                   "p = subprocess.run([sys.executable, 'stages/evaluate.py'], capture_output=True, text=True); "
                   "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode);"
                   "sys.stderr.write(p.stdout[-1500:] + p.stderr[-1500:] if p.returncode else '')")
        proc = subprocess.run([sys.executable, "-c", wrapper], cwd=work, env=env, capture_output=True, text=True)
        seconds, peak_kb, rc = proc.stdout.split()
        if rc != "0":
            sys.exit(f"evaluate failed:\n{proc.stderr}")
        metrics = json.loads((work / "reports/eval/metrics.json").read_text())
        images = sum(metrics[s].get("images", 0) + metrics[s].get("base_images", 0) for s in metrics if s != "overall")
        print(f"evaluate stage (embedded default): {float(seconds):.1f} s wall, peak RSS {int(peak_kb) / 1024:.0f} MB, "
              f"{images} images rendered and scored (target < 60 s on 2 cores)")


def tiny_setup(threads: int):
    from cocoins.method.mapper import Mapper, MapperConfig
    from cocoins.sdxl.encode import PromptEncoder
    from cocoins.sdxl.tiny import build_tiny_sdxl

    torch.set_num_threads(threads)
    pipe = build_tiny_sdxl(0)
    encoder = PromptEncoder.from_pipeline(pipe)
    mapper = Mapper(MapperConfig(code_dim=256, layers=8, hidden_dim=256, out_dims=encoder.pseudo_word_dims)).eval()
    return pipe, encoder, mapper


def gpu_setup():
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline
    from train_step_fullsize import build_fullsize

    from cocoins.method.mapper import Mapper, MapperConfig
    from cocoins.sdxl.encode import PromptEncoder

    if not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA GPU")
    device, dtype = torch.device("cuda"), torch.bfloat16
    unet, te1, te2, (tok1, tok2), scheduler = build_fullsize(device, dtype)
    vae = AutoencoderKL(**SDXL_VAE).to(device, dtype).eval()
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                     tokenizer_2=tok2, unet=unet, scheduler=scheduler)
    encoder = PromptEncoder.from_pipeline(pipe)
    mapper = Mapper(MapperConfig(code_dim=256, layers=8, hidden_dim=1024, out_dims=encoder.pseudo_word_dims))
    return pipe, encoder, mapper.to(device).eval()   # fp32, as the evaluate stage loads it


def bench_generation(pipe, encoder, mapper, batch_sizes: list[int], images: int, steps: int, guidance: float,
                     resolution: int) -> None:
    from cocoins.eval.prompt_sets import builtin_scene_prompts, identity_table
    from cocoins.eval.protocol import make_jobs, render

    pipe.set_progress_bar_config(disable=True)
    cuda = pipe.unet.device.type == "cuda"
    subjects = ("man", "woman", "boy", "girl", "person")
    jobs = make_jobs(identity_table(subjects, 8, 0), builtin_scene_prompts(subjects, 12), 1, 0)
    for bs in batch_sizes:
        n = max(images, bs) // bs * bs
        render(pipe, encoder, mapper, jobs.iloc[:bs], steps, guidance, resolution, bs, "warm-up")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        render(pipe, encoder, mapper, jobs.iloc[:n], steps, guidance, resolution, bs, f"batch {bs}")
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        memory = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
        print(f"generation batch {bs:>3}: {n / seconds:8.2f} images/s ({n} images, {steps} steps, {resolution} px, "
              f"guidance {guidance}){memory}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-stage", action="store_true", help="skip the evaluate stage timing")
    parser.add_argument("--gpu", action="store_true", help="full-size SDXL random weights on CUDA (bf16)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--images", type=int, default=None, help="images per batch size (default 32, GPU 16)")
    parser.add_argument("--steps", type=int, default=None, help="default: eval.steps of params.yaml (GPU 30)")
    parser.add_argument("--resolution", type=int, default=None, help="default: eval.resolution (GPU 1024)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (eval.cpu_threads)")
    args = parser.parse_args()
    from cocoins.config import load_params

    e = load_params(ROOT / "params.yaml").eval
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA'}")
    if not args.no_stage and not args.gpu:
        bench_stage(env)
    with torch.no_grad():
        if args.gpu:
            pipe, encoder, mapper = gpu_setup()
            bench_generation(pipe, encoder, mapper, args.batch_sizes or [1, 4, 8], args.images or 16,
                             args.steps or 30, e.guidance, args.resolution or 1024)
        else:
            pipe, encoder, mapper = tiny_setup(args.threads)
            bench_generation(pipe, encoder, mapper, args.batch_sizes or [1, 8, 32], args.images or 32,
                             args.steps or e.steps, e.guidance, args.resolution or e.resolution)


if __name__ == "__main__":
    main()
