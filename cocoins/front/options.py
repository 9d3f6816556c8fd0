"""The render options every generating command shares (`cocoins generate`, `character show`, `story`, `app`, ...)
and the pipeline they open. Below both `cocoins.cli` and `cocoins.front.commands`, which add these options to
their parsers."""

from __future__ import annotations

import argparse

import torch

from cocoins.characters.library import CharacterLibrary
from cocoins.runtime import UserError


def add_command(sub, name: str, help: str, example: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose one-line `help` heads its own --help, which ends with a one-line example."""
    return sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--height", type=int, default=None, help="pixels, a multiple of 8; default: the model's own "
                                                            "size (1024 for SDXL, 32 for the mini-world)")
    p.add_argument("--width", type=int, default=None, help="as --height")
    p.add_argument("--negative-prompt", default=None)


def add_device_options(p: argparse.ArgumentParser) -> None:
    """Where and how lean to run: every generating command takes these."""
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cpu-offload", action="store_true", help="diffusers model CPU offload (low VRAM)")
    p.add_argument("--vae", default=None, help="decode with this VAE (dir or cached hub id), e.g. the fp16-safe "
                                               "madebyollin/sdxl-vae-fp16-fix")
    p.add_argument("--vae-tiling", action="store_true", help="decode in tiles (low VRAM at large sizes)")
    p.add_argument("--vae-slicing", action="store_true", help="decode a batch one image at a time")


def open_pipeline(args: argparse.Namespace):
    """The `CoCoInsPipeline` for the render options in `args`, placed and configured."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from cocoins.pipeline import CoCoInsPipeline, check_settings

    check_settings(args.steps, args.guidance, args.height, args.width, getattr(args, "batch_size", 1))
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device {args.device}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu")
    for library in (diffusers_logging, transformers_logging):   # errors come as one line of ours instead
        library.set_verbosity_error()
        library.disable_progress_bar()
    # A command with --library reads named prompts from it, or from the default library when it is not given.
    library = CharacterLibrary(args.library) if hasattr(args, "library") else None
    pipe = CoCoInsPipeline.from_pretrained(args.model, mapper=args.mapper, vae=getattr(args, "vae", None),
                                           torch_dtype=torch.float16 if device.type == "cuda" else torch.float32,
                                           library=library)
    if args.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if getattr(args, "vae_tiling", False):
        pipe.enable_vae_tiling()
    if getattr(args, "vae_slicing", False):
        pipe.enable_vae_slicing()
    if args.height is None:
        args.height = pipe.default_size
    if args.width is None:
        args.width = pipe.default_size
    pipe.check_settings(args.steps, args.guidance, args.height, args.width, getattr(args, "batch_size", 1))
    return pipe
