"""The mapper's training loop: accelerate (single process or DDP), checkpoints, dvclive curves.

Only f trains. The UNet, VAE and text encoders are frozen; gradients flow through them to the
pseudo-words. Runs unchanged under `accelerate launch --num_processes N`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import get_cosine_schedule_with_warmup
from tqdm.auto import tqdm

from cocoins.io import atomic_dir
from cocoins.data.shards import ShardReader, step_positions
from cocoins.method.losses import LossConfig
from cocoins.method.mapper import Mapper, MapperConfig
from cocoins.method.triplets import TripletConfig
from cocoins.training.checkpoint import (clear_checkpoints, latest_checkpoint, load_checkpoint,
                                         restore_curves, save_checkpoint)
from cocoins.training.step import Batch, CocoinsStep, DenoiserSpec, NoisePredictionStep


class NonFiniteLossError(RuntimeError):
    """Raised when a loss term becomes NaN or inf; names the step and the last finite values."""


@dataclass(frozen=True)
class TrainConfig:
    objective: str = "contrastive"       # contrastive | noise_prediction
    steps: int = 5000                    # K
    batch_size: int = 128                # per optimisation step, all processes together
    lr: float = 1e-4
    weight_decay: float = 0.2
    warmup_steps: int = 500
    checkpoint_every: int = 500
    seed: int = 0
    mixed_precision: str = "fp32"        # fp32 | bf16 | fp16 (autocast; the mapper stays fp32)
    gradient_checkpointing: bool = False


@dataclass
class TrainResult:
    steps_run: int
    resumed_from: int
    final: dict


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The random source of one step on one process: codes, noises and timesteps."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1_009 + rank) % 2**63)


def fingerprint(*parts) -> str:
    """Identifies the settings a checkpoint belongs to."""
    blob = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def freeze(pipe) -> None:
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.requires_grad_(False)
        module.eval()


def train_mapper(pipe, encoder, shards: ShardReader, mapper_config: MapperConfig, loss_config: LossConfig,
                 triplet_config: TripletConfig, config: TrainConfig, mapper_dir: str | os.PathLike,
                 checkpoint_dir: str | os.PathLike, report_dir: str | os.PathLike,
                 accelerator: Accelerator, data_fingerprint: str = "") -> TrainResult:
    """Train f for `config.steps` steps, resuming from a matching checkpoint, and save it to mapper_dir."""
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % world:
        raise ValueError(f"train.batch_size {config.batch_size} is not divisible by {world} processes")
    local_batch = config.batch_size // world
    device = accelerator.device

    freeze(pipe)
    if config.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    spec = DenoiserSpec(pipe.scheduler.alphas_cumprod.to(device, torch.float32),
                        pipe.scheduler.config.prediction_type)
    torch.manual_seed(config.seed)
    mapper = Mapper(mapper_config).to(device)
    if config.objective == "contrastive":
        step_fn = CocoinsStep(pipe.unet, encoder, spec, mapper_config.code_dim, loss_config, triplet_config)
    elif config.objective == "noise_prediction":
        step_fn = NoisePredictionStep(pipe.unet, encoder, spec, mapper_config.code_dim, config.seed)
    else:
        raise ValueError(f"unknown objective {config.objective!r}")

    # Adam with decoupled weight decay: the paper's "Adam, weight decay 0.2" (Table 7).
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)

    key = fingerprint(mapper_config, loss_config, triplet_config, config, world, data_fingerprint)
    start = 0
    found = latest_checkpoint(checkpoint_dir, key)
    if found is not None:
        start = load_checkpoint(found, mapper, optimizer, lr_scheduler)
        if accelerator.is_main_process:
            restore_curves(found, report_dir)
    elif accelerator.is_main_process:
        clear_checkpoints(checkpoint_dir)
    mapper, optimizer = accelerator.prepare(mapper, optimizer)

    live = _open_live(report_dir, resume_step=start) if accelerator.is_main_process else None
    last_finite: dict = {}
    progress = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train",
                    disable=not accelerator.is_main_process)
    for k in progress:
        positions = step_positions(k, local_batch, len(shards), config.seed, rank, world)
        batch = Batch(**shards.rows(positions)).to(device)
        with accelerator.autocast():
            terms = step_fn(mapper, batch, k + 1, config.steps, step_generator(config.seed, k, rank))
        values = {"loss": terms.loss.item(), "loss_con": terms.loss_con.item(),
                  "loss_back": terms.loss_back.item() if terms.loss_back is not None else 0.0,
                  "d_pos": terms.d_pos.item(), "d_neg": terms.d_neg.item(),
                  "lambda_neg": terms.lambda_neg, "lr": lr_scheduler.get_last_lr()[0]}
        if not all(math.isfinite(v) for v in values.values()):
            raise NonFiniteLossError(f"non-finite loss at step {k + 1}: {values}; last finite values: "
                                     f"{last_finite or 'none (first step)'}. Lower train.lr or check the data.")
        last_finite = {"step": k + 1, **values}
        accelerator.backward(terms.loss)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if live is not None:
            for name, value in values.items():
                live.log_metric(name, value)
            live.next_step()
        progress.set_postfix(loss=f"{values['loss']:.4g}")
        done = k + 1
        if accelerator.is_main_process and (done % config.checkpoint_every == 0 or done == config.steps):
            save_checkpoint(checkpoint_dir, done, key, accelerator.unwrap_model(mapper), optimizer, lr_scheduler,
                            curves_dir=report_dir)
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        with atomic_dir(mapper_dir) as tmp:
            accelerator.unwrap_model(mapper).save(tmp)
        if live is not None:
            live.end()
    accelerator.wait_for_everyone()
    return TrainResult(config.steps - start, start, last_finite)


def _open_live(report_dir: str | os.PathLike, resume_step: int):
    """dvclive logger writing plain TSV curves and metrics.json (no timestamps: dvc.lock stays stable)."""
    from dvclive import Live

    report_dir = Path(report_dir)
    if resume_step == 0:
        shutil.rmtree(report_dir, ignore_errors=True)
    live = Live(dir=str(report_dir), resume=resume_step > 0, report=None, save_dvc_exp=False,
                dvcyaml=None, monitor_system=False)
    if resume_step > 0:
        live.step = resume_step
    return live
