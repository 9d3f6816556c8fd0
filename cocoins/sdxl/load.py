"""Load the base SDXL: a diffusers directory, a hub id, or `models/base/` with a `reference.json` to follow.

The `base` stage writes `models/base/`: the tiny pipeline itself, or `reference.json` `{"sdxl": "<hub id or
dir>"}` naming the real model, so that downstream stages depend on one DVC output either way and a big model
is never copied into the DVC cache.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline

from cocoins.runtime import UserError

REFERENCE = "reference.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MAX_HOPS = 4


def _is_hub_id(model: str) -> bool:
    """"org/name" with no leading ".", "/" or "~"; a missing relative dir of that shape reads as a hub id."""
    return bool(_HUB_ID.match(model))


def resolve_model(model: str | os.PathLike) -> str:
    """Follow `reference.json` files to a diffusers directory or a hub id; raise UserError with the fix."""
    target = str(model)
    for _ in range(_MAX_HOPS):
        path = Path(target).expanduser()
        if path.is_dir():
            if (path / "model_index.json").is_file():
                return str(path)
            ref = path / REFERENCE
            if ref.is_file():
                try:
                    target = json.loads(ref.read_text())["sdxl"]
                except (ValueError, KeyError, TypeError):
                    raise UserError(f"{ref} must be JSON like {{\"sdxl\": \"<hub id or diffusers dir>\"}}; "
                                    "rerun `dvc repro base` to rewrite it") from None
                if not isinstance(target, str) or not target:
                    raise UserError(f"{ref}: \"sdxl\" must be a non-empty string (a hub id or a directory)")
                continue
            raise UserError(f"{path} is not a diffusers model directory (no model_index.json or {REFERENCE}); "
                            "run `dvc repro base`, or set models.sdxl to a diffusers SDXL directory or hub id")
        if not _is_hub_id(target):
            raise UserError(f"model directory {target} does not exist; for models/base run `dvc repro base`, "
                            "otherwise point models.sdxl at an existing diffusers SDXL directory or a hub id "
                            "like stabilityai/stable-diffusion-xl-base-1.0")
        return target  # a hub id such as "stabilityai/stable-diffusion-xl-base-1.0"
    raise UserError(f"{model}: more than {_MAX_HOPS} {REFERENCE} hops (a reference loop?); point "
                    f"\"sdxl\" in {REFERENCE} straight at a diffusers directory or hub id")


def load_pipeline(model: str | os.PathLike, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32, variant: str | None = None) -> StableDiffusionXLPipeline:
    """Load an SDXL pipeline from a diffusers dir, a hub id, or a dir holding `reference.json`.

    Args:
        model: directory or hub id (e.g. `models/base`, `stabilityai/stable-diffusion-xl-base-1.0`).
        device, dtype: where and in which precision the modules live.
        variant: weight file variant to load (e.g. "fp16" for the hub's half-precision files).

    Weights load from safetensors only and no remote code runs. All modules are put in eval mode with
    gradients off: the method trains only its mapper.
    """
    target = resolve_model(model)
    if not Path(target).is_dir():
        _check_cached(target, model)
    try:
        pipe = StableDiffusionXLPipeline.from_pretrained(
            target, dtype=dtype, use_safetensors=True, variant=variant, add_watermarker=False)
    except (OSError, ValueError) as err:
        where = "directory" if Path(target).is_dir() else "hub id"
        raise UserError(f"could not load SDXL from {where} {target!r} (via {model}): {err}. Offline, a hub id "
                        "must already be in the Hugging Face cache; otherwise download it or set "
                        "models.sdxl to a local diffusers directory") from err
    pipe = pipe.to(device)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _check_cached(hub_id: str, model: str | os.PathLike) -> None:
    """Offline, a hub id must be in the Hugging Face cache: say so in one line before diffusers tries."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return
    if not isinstance(try_to_load_from_cache(hub_id, "model_index.json"), str):
        raise UserError(f"--model {model}: the hub id {hub_id} is not in the Hugging Face cache and downloads are off "
                        "(HF_HUB_OFFLINE=1); download it once with network (`hf download "
                        f"{hub_id}`), or give a local diffusers directory such as models/base")


def resolve_base(sdxl: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """What the `base` stage writes into `out_dir`: the tiny pipeline ("tiny") or a `reference.json`.

    A local directory is checked now (a clear error beats one three stages later); a hub id cannot be
    checked offline and is written as given.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if sdxl == "tiny":
        from cocoins.sdxl.tiny import save_tiny_sdxl  # only the tiny path needs it

        return save_tiny_sdxl(out_dir, seed)
    resolve_model(sdxl)
    (out_dir / REFERENCE).write_text(json.dumps({"sdxl": sdxl}, indent=2) + "\n")
    return out_dir
