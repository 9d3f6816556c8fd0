"""Check that mapper training runs correctly under DDP, on a tiny SDXL and a tiny set of latent shards.

    accelerate launch --multi_gpu --num_processes 2 -m cocoins.training.ddp_check WORKDIR   # DDP (gloo on CPU)
    python -m cocoins.training.ddp_check WORKDIR                                           # 1-process reference

Every process trains f with `train_mapper` (the stage's code path), saves its own final weights to
WORKDIR/rank-R.safetensors, and the main process checks that all ranks hold identical weights bit for bit
(DDP keeps replicas in sync by averaging gradients; a bug there shows as diverging ranks). It prints one
JSON line and exits 1 when the ranks differ. Runs of any process count over the same global batch compute
the same steps (see cocoins.training.loop), so WORKDIR/mapper/ can be compared across process counts too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

CAPTIONS = [("a <subj1>man</subj1> smiling", "photo of a <subj1>man</subj1>"),
            ("a <subj1>woman</subj1> outdoors", "the <subj1>woman</subj1> here"),
            ("a bald <subj1>man</subj1>", "a <subj1>man</subj1> with no hair"),
            ("the <subj1>person</subj1> reading", "a <subj1>person</subj1> looks down"),
            ("a <subj1>boy</subj1> and a <subj2>girl</subj2>", "a <subj2>girl</subj2> with a <subj1>boy</subj1>"),
            ("a young <subj1>girl</subj1>", "the <subj1>girl</subj1> laughs"),
            ("an old <subj1>man</subj1>", "a <subj1>man</subj1> with grey hair"),
            ("a <subj1>woman</subj1> in a hat", "the <subj1>woman</subj1> wears a hat")]


def write_tiny_shards(directory: str | Path, latent_size: int = 8, seed: int = 0) -> Path:
    """One safetensors shard + train.parquet in the precompute stage's format (random latents, real captions)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    n = len(CAPTIONS)
    save_file({"latents": torch.randn(n, 4, latent_size, latent_size, generator=g),
               "masks": (torch.rand(n, 1, latent_size, latent_size, generator=g) > 0.5).float()},
              str(directory / "shard-00000.safetensors"))
    side = 2 * latent_size
    pd.DataFrame({"image_id": [f"{i:06d}" for i in range(n)], "shard": ["shard-00000.safetensors"] * n,
                  "row": range(n), "tagged1": [c[0] for c in CAPTIONS], "tagged2": [c[1] for c in CAPTIONS],
                  "identity": range(n), "original_height": [side] * n, "original_width": [side] * n,
                  "crop_top": [0] * n, "crop_left": [0] * n, "resolution": [side] * n}
                 ).to_parquet(directory / "train.parquet")
    return directory / "train.parquet"


def make_accelerator(device: str):
    """The Accelerator for the `--device` choice: the choice decides CPU or GPU, not whether a GPU exists."""
    from accelerate import Accelerator

    from cocoins.runtime import resolve_device

    return Accelerator(cpu=resolve_device(device).type == "cpu")


def main(argv: list[str] | None = None) -> int:

    from cocoins.data.shards import ShardReader
    from cocoins.method.losses import LossConfig
    from cocoins.method.mapper import MapperConfig
    from cocoins.method.triplets import TripletConfig
    from cocoins.sdxl.encode import PromptEncoder
    from cocoins.sdxl.tiny import build_tiny_sdxl
    from cocoins.training.loop import TrainConfig, train_mapper

    parser = argparse.ArgumentParser(prog="python -m cocoins.training.ddp_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4, help="global batch, all processes together")
    parser.add_argument("--accumulation", type=int, default=1, help="micro-batches per process")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="cpu: gloo on CPU processes even on a GPU machine (the test suite pins it)")
    args = parser.parse_args(argv)

    accelerator = make_accelerator(args.device)
    work = Path(args.workdir)
    data = work / "data"
    if accelerator.is_main_process and not (data / "train.parquet").is_file():
        write_tiny_shards(data)
    accelerator.wait_for_everyone()

    pipe = build_tiny_sdxl(0).to(accelerator.device)   # same seed: identical weights on every process
    encoder = PromptEncoder.from_pipeline(pipe)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=1,
                         checkpoint_every=args.steps, seed=0, gradient_accumulation_steps=args.accumulation)
    result = train_mapper(pipe, encoder, ShardReader(data / "train.parquet", data),
                          MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=encoder.pseudo_word_dims),
                          LossConfig(gamma=1e-3), TripletConfig(), config, work / "mapper", work / "checkpoints",
                          work / "live", accelerator)
    rank, world = accelerator.process_index, accelerator.num_processes
    state = {k: v.detach().cpu().contiguous() for k, v in result.mapper.state_dict().items()}
    save_file(state, str(work / f"rank-{rank}.safetensors"))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return 0
    ranks = [load_file(str(work / f"rank-{r}.safetensors")) for r in range(world)]
    diff = max((ranks[0][k] - other[k]).abs().max().item() for other in ranks[1:] for k in ranks[0]) \
        if world > 1 else 0.0
    identical = all(torch.equal(ranks[0][k], other[k]) for other in ranks[1:] for k in ranks[0])
    print(json.dumps({"world": world, "backend": str(accelerator.distributed_type), "steps": args.steps,
                      "identical_across_ranks": identical, "max_abs_diff": diff,
                      "final_loss": result.final.get("loss")}), flush=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
