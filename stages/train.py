"""train: the CoCoIns mapping network f on the latent shards (Eqs. 3-9), with checkpoints and curves.

    python stages/train.py                                           # one process (what `dvc repro` runs)
    accelerate launch --multi_gpu --num_processes N stages/train.py  # DDP, unchanged (gloo on CPU)

Rerunning after a kill resumes from models/checkpoints/ (a persistent DVC out).
"""

import dataclasses
import hashlib
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from cocoins.checks import require
from cocoins.config import load_params
from cocoins.data.shards import ShardReader
from cocoins.eval.renders import dir_sha256
from cocoins.io import write_json
from cocoins.method.losses import LossConfig
from cocoins.method.mapper import MapperConfig
from cocoins.method.triplets import TripletConfig
from cocoins.method.word_spread import pseudo_word_spread
from cocoins.runtime import print_summary, resolve_device, run_stage, seed_everything
from cocoins.sdxl.encode import PromptEncoder
from cocoins.sdxl.load import load_pipeline
from cocoins.training.loop import TrainConfig, tower_autocast, train_mapper
from cocoins.training.preflight import train_problems

REPORT_DIR = Path("reports/train")


def main() -> None:
    params = load_params()
    t, m, l = params.train, params.mapper, params.loss
    seed_everything(t.seed)
    device = resolve_device(t.device)
    # Frozen weights in the mixed-precision dtype on CUDA (half the memory, as diffusers' training scripts do),
    # run without autocast; on CPU they stay fp32 and autocast lowers the matmuls (`tower_autocast`). f itself
    # always trains and computes in fp32.
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.mixed_precision)
    dtype = half if half is not None and device.type == "cuda" else torch.float32
    accelerator = Accelerator(mixed_precision="no" if t.mixed_precision == "fp32" else t.mixed_precision,
                              cpu=device.type == "cpu", kwargs_handlers=[
                                  InitProcessGroupKwargs(timeout=timedelta(seconds=params.launch.barrier_timeout_s)),
                                  tower_autocast(dtype)])
    require("train", train_problems(params, world=accelerator.num_processes))
    pipe = load_pipeline("models/base", device=accelerator.device, dtype=dtype)
    encoder = PromptEncoder.from_pipeline(pipe)
    shards = ShardReader("data/train.parquet", "data/latents")
    mapper_config = MapperConfig(code_dim=m.code_dim, layers=m.layers, hidden_dim=m.hidden_dim,
                                 out_dims=tuple(encoder.pseudo_word_dims), odd=m.odd)
    # The params schema's loss group and the library's LossConfig share field names (plus `distance`).
    loss_config = LossConfig(**{f.name: getattr(l, f.name) for f in dataclasses.fields(LossConfig)})
    config = TrainConfig(objective=t.objective, steps=t.steps, batch_size=t.batch_size, lr=t.lr,
                         weight_decay=t.weight_decay, warmup_steps=t.warmup_steps,
                         checkpoint_every=t.checkpoint_every, seed=t.seed, mixed_precision=t.mixed_precision,
                         gradient_checkpointing=t.gradient_checkpointing,
                         gradient_accumulation_steps=t.gradient_accumulation_steps,
                         micro_batch_size=t.micro_batch_size,
                         mapper_init=m.init, mapper_init_words=tuple(m.init_words),
                         mapper_fixed_norm=m.fixed_norm)
    # A checkpoint resumes only on the data and the frozen model it was trained against: the index, the latent
    # shards and the base model's files (a retrained base with the same VAE writes the same latents).
    data_key = hashlib.sha256("\n".join([hashlib.sha256(Path("data/train.parquet").read_bytes()).hexdigest(),
                                         dir_sha256("data/latents"), dir_sha256("models/base")]).encode()
                              ).hexdigest()[:16]
    result = train_mapper(pipe, encoder, shards, mapper_config, loss_config,
                          TripletConfig(**dataclasses.asdict(params.triplet)), config,
                          "models/mapper", "models/checkpoints", REPORT_DIR / "live", accelerator, data_key)
    if accelerator.is_main_process:
        spread = pseudo_word_spread(result.mapper)
        write_json(spread, REPORT_DIR / "pseudo_words.json")
        final = {k: float(f"{v:.6g}") for k, v in result.final.items() if k != "step"}
        print_summary("train", len(shards), {}, {"steps run": result.steps_run,
                                                 "resumed from step": result.resumed_from,
                                                 "final": final, "mapper": "models/mapper",
                                                 "pseudo-word effective rank": {k: v["effective_rank"]
                                                                                for k, v in spread.items()}})


if __name__ == "__main__":
    run_stage(main)
