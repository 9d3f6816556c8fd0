"""The mapper's training loop: accelerate (single process or DDP), accumulation, checkpoints, dvclive curves.

Only f trains. The UNet, VAE and text encoders are frozen; gradients flow through them to the
pseudo-words. Runs unchanged under `accelerate launch --num_processes N` (f wrapped in DDP by
`accelerator.prepare`, gradients averaged across processes).

One optimisation step k covers `batch_size` samples: stream positions k * batch_size + i, i < batch_size.
Process r's micro-batch m takes slots [(m * world + r) * b, (m * world + r + 1) * b) with
b = batch_size / (world * gradient_accumulation_steps). Data (`step_positions`) and random draws
(`sample_generator`) are pure functions of the stream position, and each micro-batch's loss is a mean over
its b samples, scaled by 1 / accumulation steps and averaged over processes by DDP: every layout of the
same global batch computes the same step, up to float rounding. Logged values are means over the global
batch (reduced across processes), so curves do not depend on the layout either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import AutocastKwargs
from diffusers.optimization import get_cosine_schedule_with_warmup
from tqdm.auto import tqdm

from cocoins.io import atomic_dir
from cocoins.data.shards import ShardReader, step_positions
from cocoins.method.losses import LossConfig
from cocoins.method.mapper import Mapper, MapperConfig, init_like_words, word_embedding_rms, word_gains
from cocoins.method.triplets import TripletConfig
from cocoins.runtime import UserError
from cocoins.training.checkpoint import (clear_checkpoints, latest_checkpoint, load_checkpoint,
                                         restore_curves, restore_scaler, save_checkpoint)
from cocoins.training.step import Batch, CocoinsStep, DenoiserSpec, NoisePredictionStep, sample_generator

LOGGED = ("loss", "loss_con", "loss_back", "d_pos", "d_neg")


class NonFiniteLossError(RuntimeError):
    """Raised when a loss term becomes NaN or inf; names the step and the last finite values."""


@dataclass(frozen=True)
class TrainConfig:
    objective: str = "contrastive"       # contrastive | noise_prediction
    steps: int = 5000                    # K
    batch_size: int = 128                # per optimisation step, all processes and micro-batches together
    lr: float = 1e-4
    weight_decay: float = 0.2
    warmup_steps: int = 500
    checkpoint_every: int = 500
    seed: int = 0
    mixed_precision: str = "fp32"        # fp32 | bf16 | fp16 (half towers, or autocast; f stays fp32)
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1  # micro-batches per process per optimisation step
    micro_batch_size: int | None = None   # set: samples per process per pass; accumulation follows from it
    mapper_init: str = "pytorch"         # pytorch (nn.Linear's default) | words (`init_like_words`)
    mapper_init_words: tuple[str, ...] = ("man", "woman", "person")   # whose embedding size words start at
    mapper_fixed_norm: bool = False      # every pseudo-word keeps the RMS norm of mapper_init_words' embeddings


@dataclass
class TrainResult:
    steps_run: int
    resumed_from: int
    final: dict
    mapper: torch.nn.Module              # the trained f (unwrapped from DDP), on this process


def fingerprint(*parts) -> str:
    """Identifies the settings a checkpoint belongs to."""
    blob = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def freeze(pipe) -> None:
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.requires_grad_(False)
        module.eval()


def tower_autocast(tower_dtype: torch.dtype) -> AutocastKwargs:
    """The Accelerator's autocast for frozen towers stored in `tower_dtype` (pass it as a kwargs handler).

    fp32 towers (the CPU): on, autocast lowers their matmuls to the mixed-precision dtype. Towers stored in bf16 /
    fp16 (CUDA): off. Every tower op already runs in their dtype, so autocast would only add casts at each norm and
    each op it keeps in fp32 (benchmarks/results/step_casts.md), and it would run f in bf16 too: accelerate wraps
    the prepared model's forward in the same autocast. Without it f computes in fp32, its pseudo-word is cast once
    into the towers' dtype (the token-embedding hook in cocoins/sdxl/encode.py), x_t once into the UNet
    (`cocoins.training.step.denoise`), and the x0 estimates and the loss stay fp32. fp16 keeps its loss scaler.
    """
    return AutocastKwargs(enabled=tower_dtype == torch.float32)


def check_precision(config: TrainConfig, accelerator: Accelerator, tower_dtype: torch.dtype = torch.float32) -> None:
    """The accelerator must autocast as `train.mixed_precision` and the towers' dtype say (`tower_autocast`);
    fp16 needs CUDA (UserError)."""
    expected = "no" if config.mixed_precision == "fp32" else config.mixed_precision
    if config.mixed_precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"train.mixed_precision {config.mixed_precision!r}: use fp32, bf16 or fp16")
    if config.mixed_precision == "fp16" and accelerator.device.type != "cuda":
        raise UserError("train.mixed_precision fp16 needs a CUDA GPU: accelerate does not autocast fp16 on "
                        f"{accelerator.device.type} (it would silently train in fp32); use bf16 or fp32 here")
    if accelerator.mixed_precision != expected:
        raise UserError(f"the Accelerator runs mixed_precision={accelerator.mixed_precision!r} but "
                        f"train.mixed_precision is {config.mixed_precision!r}; build it with "
                        f"Accelerator(mixed_precision={expected!r}) and do not override it at launch")
    handler = getattr(accelerator, "autocast_handler", None)
    autocasts = handler is None or handler.enabled
    if expected != "no" and autocasts != tower_autocast(tower_dtype).enabled:
        raise UserError(f"the frozen towers are stored in {str(tower_dtype).removeprefix('torch.')} but the "
                        f"Accelerator's autocast is {'on' if autocasts else 'off'}; build it with kwargs_handlers="
                        f"[tower_autocast(dtype)] (cocoins.training.loop), as stages/train.py does")


def micro_batch_layout(config: TrainConfig, world: int) -> tuple[int, int]:
    """(samples per process per pass, passes per process per step) for `world` processes.

    With `micro_batch_size` set, the accumulation follows from it, so one profile keeps the global batch on
    1, 2, 4 or 8 GPUs; otherwise the micro-batch follows from `gradient_accumulation_steps`.
    """
    if config.micro_batch_size is not None:
        per_pass = world * config.micro_batch_size
        if config.micro_batch_size < 1 or config.batch_size % per_pass:
            raise UserError(f"train.batch_size {config.batch_size} must divide into {world} process(es) x "
                            f"train.micro_batch_size {config.micro_batch_size}; pick a micro-batch that divides "
                            f"{config.batch_size // world if config.batch_size % world == 0 else 'the batch'}")
        return config.micro_batch_size, config.batch_size // per_pass
    parts = world * config.gradient_accumulation_steps
    if config.gradient_accumulation_steps < 1 or config.batch_size % parts:
        raise UserError(f"train.batch_size {config.batch_size} must divide into {world} process(es) x "
                        f"train.gradient_accumulation_steps {config.gradient_accumulation_steps}; change either")
    return config.batch_size // parts, config.gradient_accumulation_steps


def train_mapper(pipe, encoder, shards: ShardReader, mapper_config: MapperConfig, loss_config: LossConfig,
                 triplet_config: TripletConfig, config: TrainConfig, mapper_dir: str | os.PathLike,
                 checkpoint_dir: str | os.PathLike, report_dir: str | os.PathLike,
                 accelerator: Accelerator, data_fingerprint: str = "") -> TrainResult:
    """Train f for `config.steps` steps, resuming from a matching checkpoint, and save it to mapper_dir."""
    world, rank = accelerator.num_processes, accelerator.process_index
    micro, accum = micro_batch_layout(config, world)
    check_precision(config, accelerator, pipe.unet.dtype)
    device = accelerator.device

    freeze(pipe)
    if config.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    spec = DenoiserSpec(pipe.scheduler.alphas_cumprod.to(device, torch.float32),
                        pipe.scheduler.config.prediction_type)
    torch.manual_seed(config.seed)
    if config.mapper_init not in ("pytorch", "words"):
        raise UserError(f"mapper.init {config.mapper_init!r}: use pytorch or words")
    if config.mapper_init == "words" or config.mapper_fixed_norm:
        word_rms = word_embedding_rms(encoder.tokenizers, encoder.text_encoders, config.mapper_init_words)
        mapper_config = dataclasses.replace(
            mapper_config, output_norm=word_rms if config.mapper_fixed_norm else None,
            output_gain=word_gains(word_rms, mapper_config.out_dims) if config.mapper_init == "words" else None)
    mapper = Mapper(mapper_config)
    if config.mapper_init == "words":
        init_like_words(mapper, torch.Generator().manual_seed(config.seed))
    mapper = mapper.to(device)
    if config.objective == "contrastive":
        step_fn = CocoinsStep(pipe.unet, encoder, spec, mapper_config.code_dim, loss_config, triplet_config)
    elif config.objective == "noise_prediction":
        step_fn = NoisePredictionStep(pipe.unet, encoder, spec, mapper_config.code_dim, config.seed)
    else:
        raise ValueError(f"unknown objective {config.objective!r}")

    # Adam with decoupled weight decay: the paper's "Adam, weight decay 0.2" (Table 7).
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)

    # The process/micro-batch layout does not change the math, so it is left out: a run killed on 4 GPUs
    # resumes on 2 (equal up to float rounding; bit for bit on the same layout).
    layout_free = dataclasses.replace(config, gradient_accumulation_steps=1, micro_batch_size=None)
    key = fingerprint(mapper_config, loss_config, triplet_config, layout_free, data_fingerprint)
    start = 0
    found = latest_checkpoint(checkpoint_dir, key)
    if found is not None:
        start = load_checkpoint(found, mapper, optimizer, lr_scheduler)
        if accelerator.is_main_process:
            restore_curves(found, report_dir)
    elif accelerator.is_main_process:
        clear_checkpoints(checkpoint_dir)
    accelerator.wait_for_everyone()  # no process reads checkpoint_dir while the main one clears it
    mapper, optimizer = accelerator.prepare(mapper, optimizer)
    scaler = accelerator.scaler      # fp16 only: its loss scale is part of the exact state
    if found is not None and scaler is not None:
        restore_scaler(found, scaler)

    live = _open_live(report_dir, resume_step=start) if accelerator.is_main_process else None
    last_finite: dict = {}
    progress = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train",
                    disable=not accelerator.is_main_process)
    for k in progress:
        sums = torch.zeros(len(LOGGED), dtype=torch.float64)
        for m in range(accum):
            first_slot = (m * world + rank) * micro
            positions = step_positions(k * accum + m, micro, len(shards), config.seed, rank, world)
            generators = [sample_generator(config.seed, k * config.batch_size + first_slot + j)
                          for j in range(micro)]
            batch = Batch(**shards.rows(positions)).to(device)
            # Gradients are all-reduced once per step, on the last micro-batch.
            sync = contextlib.nullcontext() if m == accum - 1 else accelerator.no_sync(mapper)
            with sync:
                with accelerator.autocast():
                    terms = step_fn(mapper, batch, k + 1, config.steps, generators)
                accelerator.backward(terms.loss / accum if accum > 1 else terms.loss)
            back = terms.loss_back.detach() if terms.loss_back is not None else terms.loss.new_zeros(())
            # One transfer (one wait for the device) per micro-batch, not one per logged value.
            sums += torch.stack([terms.loss.detach(), terms.loss_con.detach(), back, terms.d_pos,
                                 terms.d_neg]).float().cpu().double()
        means = accelerator.reduce((sums / accum).to(device), reduction="mean").cpu()
        values = {name: float(v) for name, v in zip(LOGGED, means)}
        values.update(lambda_neg=terms.lambda_neg, lr=lr_scheduler.get_last_lr()[0])
        if not all(math.isfinite(v) for v in values.values()):  # same verdict on every process (reduced)
            raise NonFiniteLossError(f"non-finite loss at step {k + 1}: {values}; last finite values: "
                                     f"{last_finite or 'none (first step)'}. Lower train.lr or check the data.")
        last_finite = {"step": k + 1, **values}
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
                            curves_dir=report_dir, scaler=scaler)
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        with atomic_dir(mapper_dir) as tmp:
            accelerator.unwrap_model(mapper).save_pretrained(tmp)
        if live is not None:
            live.end()
    accelerator.wait_for_everyone()
    return TrainResult(config.steps - start, start, last_finite, accelerator.unwrap_model(mapper))


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
