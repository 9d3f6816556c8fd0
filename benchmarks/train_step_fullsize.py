"""Full-size train-step benchmark: SDXL base's UNet and both text encoders from their published configs, with
random weights, running the project's `CocoinsStep` with a real Mapper. Prints samples/s, peak GPU memory and
model-FLOPs utilization (MFU) per batch size.

    python benchmarks/train_step_fullsize.py --batch-sizes 4 8 16 --resolution 512      # on a GPU (bf16)
    python benchmarks/train_step_fullsize.py --batch-sizes 8 --resolution 1024 --gradient-checkpointing
    python benchmarks/train_step_fullsize.py --flops-only --device meta --batch-sizes 1   # FLOPs, no GPU
    python benchmarks/train_step_fullsize.py --tiny --steps 1                             # CPU smoke run

FLOPs per step are counted by torch.utils.flop_counter.FlopCounterMode on one real step (forward + backward;
the mapper's AdamW update is negligible), so MFU = FLOPs/step / (s/step) / peak. The analytic estimate of
ARCHITECTURE.md (1.59 TFLOP per sample per UNet forward at 512 px, 6.76 at 1024 px, about 8
forward-equivalents per sample per step) is printed beside it. Peak: --peak-tflops, else 989 TFLOP/s (dense
bf16, H100/H200 SXM) on CUDA. Weights: bf16 on CUDA (frozen, as the train stage loads them), run as the train
loop runs them: without autocast (`cocoins.training.loop.tower_autocast`); --autocast puts bf16 autocast back
around the step (the path before issue 26). The mapper trains in fp32. On the meta device nothing is computed:
only FLOPs are counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cocoins.method.losses import LossConfig  # noqa: E402
from cocoins.method.mapper import Mapper, MapperConfig  # noqa: E402
from cocoins.method.triplets import TripletConfig  # noqa: E402
from cocoins.rehearsal.architectures import CLIP_L, OPENCLIP_BIGG, SDXL_SCHEDULER, SDXL_UNET  # noqa: E402
from cocoins.training.loop import tower_autocast  # noqa: E402
from cocoins.training.step import Batch, CocoinsStep, DenoiserSpec, sample_generator  # noqa: E402

UNET_FORWARD_TFLOP = {512: 1.59, 1024: 6.76}   # per sample (ARCHITECTURE.md, FlopCounterMode on this config)
FORWARD_EQUIVALENTS = 8                         # 5 forwards + 3 activation backwards (~1 forward each)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}    # dense bf16, SXM
CAPTIONS = [("a <subj1>man</subj1> with short brown hair smiling at the camera in a park",
             "photo of a smiling <subj1>man</subj1> outdoors with trees behind him"),
            ("a young <subj1>woman</subj1> with long blond hair wearing a red jacket",
             "the <subj1>woman</subj1> has blond hair and a red jacket, city street")]


def build_fullsize(device: torch.device, dtype: torch.dtype):
    """UNet + both text encoders at SDXL size, random weights, created directly on `device` in `dtype`."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from cocoins.sdxl.tokenizer import build_clip_tokenizer

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            unet = UNet2DConditionModel(**SDXL_UNET)
            text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L))
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**OPENCLIP_BIGG))
    finally:
        torch.set_default_dtype(previous)
    for m in (unet, text_encoder, text_encoder_2):
        m.eval().requires_grad_(False)
    tokenizers = build_clip_tokenizer(second=False), build_clip_tokenizer(second=True)
    return unet, text_encoder, text_encoder_2, tokenizers, EulerDiscreteScheduler(**SDXL_SCHEDULER)


def build_tiny(device: torch.device):
    from cocoins.sdxl.tiny import build_tiny_sdxl

    pipe = build_tiny_sdxl(0).to(device)
    return pipe.unet, pipe.text_encoder, pipe.text_encoder_2, (pipe.tokenizer, pipe.tokenizer_2), pipe.scheduler


def make_batch(size: int, latent: int, device: torch.device) -> Batch:
    g = torch.Generator().manual_seed(0)
    pairs = [CAPTIONS[i % len(CAPTIONS)] for i in range(size)]
    pixels = 8 * latent
    return Batch(torch.randn(size, 4, latent, latent, generator=g),
                 (torch.rand(size, 1, latent, latent, generator=g) > 0.5).float(),
                 torch.tensor([[pixels, pixels, 0, 0, pixels, pixels]] * size).float(),
                 [p[0] for p in pairs], [p[1] for p in pairs], torch.arange(size)).to(device)


def step_autocast(device: torch.device, dtype: torch.dtype, force: bool = False):
    """The autocast the train loop runs a step under, for frozen towers stored in `dtype`: none in fp32, none for
    bf16 towers either (`tower_autocast`); `force` puts bf16 autocast back (the path before issue 26)."""
    if dtype != torch.float32 and (force or tower_autocast(dtype).enabled):
        return lambda: torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext


def run_step(step_fn, mapper, optimizer, batch: Batch, k: int, autocast) -> None:
    generators = [sample_generator(0, k * batch.latents.shape[0] + i) for i in range(batch.latents.shape[0])]
    with autocast():
        terms = step_fn(mapper, batch, k + 1, 5000, generators)
    terms.loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def count_flops(step_fn, mapper, batch: Batch, autocast) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run_step(step_fn, mapper, None, batch, 0, autocast)
    mapper.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def time_steps(step_fn, mapper, optimizer, batch: Batch, args, autocast, cuda: bool) -> float:
    """Seconds per optimisation step over `args.steps` steps after `args.warmup`; resets the memory peak."""
    for k in range(args.warmup):
        run_step(step_fn, mapper, optimizer, batch, k, autocast)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for k in range(args.warmup, args.warmup + args.steps):
        run_step(step_fn, mapper, optimizer, batch, k, autocast)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--resolution", type=int, default=512, help="image side in pixels (latents: /8)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per batch size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs of one step, time nothing")
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: 989 on H100/H200)")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                        help="frozen weights; auto: bf16 on CUDA, fp32 elsewhere")
    parser.add_argument("--autocast", action="store_true",
                        help="bf16 autocast around the step (the path before issue 26)")
    parser.add_argument("--tiny", action="store_true", help="tiny SDXL config on CPU (tests this script)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    # FLOPs do not depend on dtype: fp32 on meta (which has no autocast), bf16 by default on CUDA.
    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and cuda)
    dtype = torch.bfloat16 if bf16 and device.type != "meta" else torch.float32
    if args.tiny:   # the tiny VAE downsamples by 2: 16x16 latents are the embedded default's 32 px
        unet, te1, te2, (tok1, tok2), scheduler = build_tiny(device)
        unet, te1, te2 = (m.to(dtype) for m in (unet, te1, te2))
        latent, args.resolution = 16, 32
        mapper_config = MapperConfig(code_dim=256, layers=8, hidden_dim=256, out_dims=(32, 32))
    else:
        unet, te1, te2, (tok1, tok2), scheduler = build_fullsize(device, dtype)
        latent = args.resolution // 8
        mapper_config = MapperConfig(code_dim=256, layers=8, hidden_dim=1024, out_dims=(768, 1280))
    from cocoins.sdxl.encode import PromptEncoder

    encoder = PromptEncoder(tok1, tok2, te1, te2)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in
              (("unet", unet), ("text_encoder", te1), ("text_encoder_2", te2))}
    spec = DenoiserSpec(scheduler.alphas_cumprod.to(device, torch.float32), scheduler.config.prediction_type)
    torch.manual_seed(0)
    mapper = Mapper(mapper_config).to(device)
    optimizer = None if device.type == "meta" else torch.optim.AdamW(mapper.parameters(), lr=1e-4,
                                                                     weight_decay=0.2)
    # As the train stage: frozen weights in bf16, run without autocast; the mapper in fp32.
    autocast = step_autocast(device, dtype, args.autocast)
    peak = args.peak_tflops or (next((v for k, v in PEAK_TFLOPS.items() if k in torch.cuda.get_device_name()),
                                     None) if cuda else None)
    name = torch.cuda.get_device_name() if cuda else str(device)
    print(f"device {name}, torch {torch.__version__}, {'tiny' if args.tiny else 'full-size'} SDXL, "
          f"weights {dtype}, {args.resolution} px ({latent}x{latent} latents), params "
          + ", ".join(f"{k} {v / 1e6:,.1f} M" for k, v in params.items())
          + f", gradient checkpointing {args.gradient_checkpointing}, compile {args.compile}, "
          f"peak {peak or 'unknown'} TFLOP/s")

    # Model FLOPs (MFU) count the step without recomputation; with gradient checkpointing the hardware
    # FLOPs (HFU) include the recomputed forwards. Counted before torch.compile (the counter is eager).
    step_fn = CocoinsStep(unet, encoder, spec, mapper_config.code_dim, LossConfig(), TripletConfig())
    rows = []
    for size in args.batch_sizes:
        batch = make_batch(size, latent, device)
        row = {"batch_size": size, "resolution": args.resolution}
        try:
            row["model_tflop_per_step"] = count_flops(step_fn, mapper, batch, autocast) / 1e12
        except torch.OutOfMemoryError:
            print(json.dumps({**row, "out_of_memory": True}), flush=True)
            mapper.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            continue
        if args.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            row["hardware_tflop_per_step"] = count_flops(step_fn, mapper, batch, autocast) / 1e12
            unet.disable_gradient_checkpointing()
        if not args.tiny and args.resolution in UNET_FORWARD_TFLOP:
            per_forward = UNET_FORWARD_TFLOP[args.resolution] * size
            row["forward_equivalents_per_sample"] = row["model_tflop_per_step"] / per_forward
            row["analytic_tflop_per_step"] = FORWARD_EQUIVALENTS * per_forward
        rows.append(row)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if args.compile:
        step_fn.unet = torch.compile(unet)

    for row in rows:
        if not args.flops_only:
            size = row["batch_size"]
            batch = make_batch(size, latent, device)
            try:
                step_s = time_steps(step_fn, mapper, optimizer, batch, args, autocast, cuda)
            except torch.OutOfMemoryError:
                row["out_of_memory"] = True
                print(json.dumps(row), flush=True)
                mapper.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                continue
            achieved = row["model_tflop_per_step"] / step_s
            row.update(step_s=step_s, samples_per_s=size / step_s, achieved_model_tflops=achieved,
                       mfu=achieved / peak if peak else None,
                       peak_gpu_memory_gb=torch.cuda.max_memory_allocated() / 2**30 if cuda else None)
            if "hardware_tflop_per_step" in row and peak:
                row["hfu"] = row["hardware_tflop_per_step"] / step_s / peak
        print(json.dumps(row), flush=True)
    results = rows
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "args": vars(args),
                                               "params": params, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
