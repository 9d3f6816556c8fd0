"""Front benchmark: images/s and peak memory of the Python API at batch 1 and batch 8, before (the
pre-API path: `cocoins.sdxl.generate.generate` with pseudo-words, what `cocoins generate` ran at 0883a6f) and
after (`CoCoInsPipeline.__call__`, with and without VAE slicing), and the web app's time from a click on
Generate to the image in a headless Chromium. Prints numbers; asserts nothing.

    python benchmarks/front.py                                # mini-world models/base + models/mapper, CPU
    python benchmarks/front.py --model M --mapper F --steps 20 --images 16 --no-app
    python benchmarks/front.py --device cuda --size 1024      # peak GPU memory at 1024 px (a lent GPU)

Each configuration runs in its own process, so its peak memory (CPU: peak RSS; CUDA: torch's peak allocated)
is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "a photo of a <subj1>woman</subj1> in a green park"
CONFIGS = ("before", "api", "api+vae-slicing", "api+cpu-offload")


def measure(args: argparse.Namespace) -> dict:
    """One configuration in this process: warm-up render, then `images` images at `batch`."""
    import torch

    from cocoins.characters.codes import code_from_seed
    from cocoins.pipeline import CoCoInsPipeline
    from cocoins.sdxl.generate import generate

    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = CoCoInsPipeline.from_pretrained(args.model, mapper=args.mapper, torch_dtype=dtype)
    if args.config == "api+cpu-offload":
        pipe.enable_model_cpu_offload(device)
    else:
        pipe.to(device)
    if args.config == "api+vae-slicing":
        pipe.enable_vae_slicing()
    size = args.size or pipe.default_size
    seeds = list(range(args.images))

    def run(n: int) -> None:
        for i in range(0, n, args.batch):
            chunk = seeds[i:min(i + args.batch, n)]
            if args.config == "before":
                codes = torch.stack([code_from_seed(7, pipe.code_dim)[None]] * len(chunk))
                generate(pipe.sdxl, pipe.encoder, [PROMPT] * len(chunk), pipe.mapper(codes.to(device)), chunk,
                         steps=args.steps, guidance=5.0, height=size, width=size)
            else:
                pipe([PROMPT] * len(chunk), subjects=[7], seed=chunk, num_inference_steps=args.steps,
                     guidance_scale=5.0, height=size, width=size, batch_size=args.batch)

    run(min(args.batch, args.images))                      # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run(args.images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"config": args.config, "batch": args.batch, "size": size, "steps": args.steps, "images": args.images,
            "images_per_s": round(args.images / seconds, 3), "peak_mb": round(peak, 1),
            "peak_kind": "GPU allocated" if device.type == "cuda" else "process RSS"}


def app_click_to_image(args: argparse.Namespace) -> float:
    """Seconds from a click on Generate to the image in the gallery (median of 3), headless Chromium."""
    import statistics
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from cocoins.front.app import launch
    from cocoins.characters.library import Character, CharacterLibrary
    from cocoins.characters.codes import code_from_seed
    from cocoins.pipeline import CoCoInsPipeline

    tmp = Path(tempfile.mkdtemp(prefix="front-bench-"))
    pipe = CoCoInsPipeline.from_pretrained(args.model, mapper=args.mapper)
    library = CharacterLibrary(tmp / "library")
    library.add(Character("alice", code_from_seed(7, pipe.code_dim), pipe.mapper_sha256, {"code_seed": 7}))
    page = launch(pipe, library, port=args.port, block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    times = []
    try:
        driver.get(f"http://127.0.0.1:{args.port}/")
        time.sleep(3)
        driver.find_element(By.CSS_SELECTOR, "#steps input").clear()
        driver.find_element(By.CSS_SELECTOR, "#steps input").send_keys(str(args.steps))
        driver.find_element(By.CSS_SELECTOR, "#prompt textarea, #prompt input").send_keys(
            "a photo of a <alice>woman</alice> in a green park")
        for i in range(1, 4):
            start = time.perf_counter()
            driver.find_element(By.ID, "generate").click()
            while len({im.get_attribute("src") for im in driver.find_elements(By.CSS_SELECTOR, "#gallery img")}) < i:
                time.sleep(0.05)
            times.append(time.perf_counter() - start)
    finally:
        driver.quit()
        page.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/base")
    parser.add_argument("--mapper", default="models/mapper")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None, help="pixels (default: the model's own size)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--configs", nargs="+", default=["before", "api", "api+vae-slicing"], choices=CONFIGS)
    parser.add_argument("--no-app", action="store_true", help="skip the browser click-to-image timing")
    parser.add_argument("--port", type=int, default=7899)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)     # a child: one configuration
    parser.add_argument("--config", default="api", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args)))
        return
    for config in args.configs:
        for batch in args.batches:
            cmd = [sys.executable, __file__, "--one", "--config", config, "--batch", str(batch), "--model", args.model,
                   "--mapper", args.mapper, "--device", args.device, "--steps", str(args.steps),
                   "--images", str(args.images)] + (["--size", str(args.size)] if args.size else [])
            result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            print(f"{config:16s} batch {batch}: {result['images_per_s']:8.3f} images/s, peak {result['peak_mb']:.0f} MB "
                  f"({result['peak_kind']}; {result['images']} images, {result['size']} px, {result['steps']} steps)",
                  flush=True)
    if not args.no_app:
        print(f"app: {app_click_to_image(args):.2f} s from click to image (median of 3, {args.steps} steps)")


if __name__ == "__main__":
    main()
