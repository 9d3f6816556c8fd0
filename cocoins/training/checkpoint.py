"""Training checkpoints in safetensors + JSON (no pickle): mapper, optimizer, LR schedule, step.

Batches and random draws are pure functions of (seed, step, rank) (see `step_positions` and
`step_generator`), so a checkpoint needs no RNG state to resume bit for bit; the torch RNG state is saved
anyway for code that draws from the global generator.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cocoins.io import atomic_dir

STATE_NAME = "state.json"
CURVES_NAME = "curves"


@dataclass
class Checkpoint:
    step: int
    path: Path


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, slots in state_dict["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"scalars": scalars, "param_groups": state_dict["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(directory: str | os.PathLike, step: int, fingerprint: str, mapper: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, lr_scheduler, curves_dir: str | os.PathLike | None = None,
                    keep: int = 2, scaler=None) -> Path:
    """Write `step-XXXXXXX/` atomically and keep only the newest `keep` checkpoints.

    `scaler` (fp16's GradScaler, else None) is saved too: its loss scale decides which steps are skipped.

    `curves_dir` (the dvclive dir) is copied in too: DVC deletes a stage's outputs before rerunning it,
    so a resumed run restores the curves logged so far from here.
    """
    directory = Path(directory)
    target = directory / f"step-{step:07d}"
    with atomic_dir(target) as tmp:
        if curves_dir is not None and Path(curves_dir).is_dir():
            shutil.copytree(curves_dir, tmp / CURVES_NAME)
        save_file({k: v.detach().cpu().contiguous() for k, v in mapper.state_dict().items()},
                  str(tmp / "mapper.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({"torch_cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        state = {"step": step, "fingerprint": fingerprint, "optimizer": opt_meta,
                 "lr_scheduler": lr_scheduler.state_dict(),
                 "grad_scaler": scaler.state_dict() if scaler is not None else None}
        (tmp / STATE_NAME).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old)
    return target


def latest_checkpoint(directory: str | os.PathLike, fingerprint: str) -> Checkpoint | None:
    """The newest complete checkpoint made with the same settings, or None.

    Checkpoints of other settings (another `dvc exp run -S ...`) are never resumed from.
    """
    directory = Path(directory)
    for path in sorted(directory.glob("step-*"), reverse=True):
        state_file = path / STATE_NAME
        if not state_file.is_file():
            continue
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") == fingerprint:
            return Checkpoint(int(state["step"]), path)
    return None


def load_checkpoint(checkpoint: Checkpoint, mapper: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    lr_scheduler) -> int:
    """Restore everything saved by `save_checkpoint`; returns the number of completed steps."""
    state = json.loads((checkpoint.path / STATE_NAME).read_text())
    device = next(mapper.parameters()).device
    mapper.load_state_dict(load_file(str(checkpoint.path / "mapper.safetensors"), device=str(device)))
    tensors = load_file(str(checkpoint.path / "optimizer.safetensors"), device=str(device))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    torch.set_rng_state(load_file(str(checkpoint.path / "rng.safetensors"))["torch_cpu"])
    return int(state["step"])


def restore_scaler(checkpoint: Checkpoint, scaler) -> None:
    """Put back fp16's GradScaler state (loss scale, growth tracker) saved with `checkpoint`."""
    saved = json.loads((checkpoint.path / STATE_NAME).read_text()).get("grad_scaler")
    if saved is None:
        raise ValueError(f"{checkpoint.path} has no GradScaler state but this run uses fp16; "
                         "delete models/checkpoints to restart training")
    scaler.load_state_dict(saved)


def restore_curves(checkpoint: Checkpoint, curves_dir: str | os.PathLike) -> None:
    """Put back the training curves saved with `checkpoint` (replacing whatever is there)."""
    curves_dir = Path(curves_dir)
    shutil.rmtree(curves_dir, ignore_errors=True)
    saved = checkpoint.path / CURVES_NAME
    if saved.is_dir():
        shutil.copytree(saved, curves_dir)


def clear_checkpoints(directory: str | os.PathLike) -> None:
    directory = Path(directory)
    for old in directory.glob("step-*"):
        shutil.rmtree(old)
