"""Latent shards: SDXL-style image preprocessing, VAE encoding, safetensors shards and their reader.

Training reads these shards, never images. The precompute side: `prepare_image`, `load_vae`, `encode_shard`. Each shard holds `latents` [N, 4, h, w] (already multiplied by
the VAE scaling factor) and `masks` [N, 1, h, w] (the subject mask m at latent resolution, in {0, 1});
`data/train.parquet` indexes them row by row with the captions and SDXL's micro-conditioning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

from cocoins.runtime import UserError

SHARD_PATTERN = "shard-{:05d}.safetensors"


@dataclass(frozen=True)
class Prepared:
    pixels: torch.Tensor     # [3, R, R] in [-1, 1]
    mask: torch.Tensor       # [1, R, R] in {0, 1}
    original_size: tuple[int, int]   # (height, width) of the source image
    crop_top_left: tuple[int, int]   # in resized coordinates, as SDXL's time ids expect


def prepare_image(image_path: str | os.PathLike, mask_path: str | os.PathLike, resolution: int) -> Prepared:
    """Resize the shorter side to `resolution` and center-crop a square, the SDXL training recipe."""
    with Image.open(image_path) as img:
        image = img.convert("RGB")
    with Image.open(mask_path) as m:
        mask = m.convert("L")
    if mask.size != image.size:
        raise ValueError(f"mask {mask_path} is {mask.size}, image {image_path} is {image.size}")
    width, height = image.size
    scale = resolution / min(width, height)
    new_w, new_h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    mask = mask.resize((new_w, new_h), Image.Resampling.NEAREST)
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    box = (left, top, left + resolution, top + resolution)
    pixels = torch.from_numpy(np.asarray(image.crop(box), dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    mask_t = torch.from_numpy((np.asarray(mask.crop(box)) > 127).astype(np.float32))[None]
    return Prepared(pixels, mask_t, (height, width), (top, left))


def mask_to_latent(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Downsample a pixel mask [N,1,H,W] to the latent grid: a latent cell is subject if most of it is."""
    return (F.interpolate(mask, size=latent_size, mode="area") >= 0.5).to(torch.float32)


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor) -> torch.Tensor:
    """x = scaling_factor * E(I). The posterior mean, not a sample, keeps shards deterministic."""
    param = next(vae.parameters())
    latents = vae.encode(pixels.to(param.device, param.dtype)).latent_dist.mean
    return (latents * vae.config.scaling_factor).float().cpu()


FP16_FIX = "madebyollin/sdxl-vae-fp16-fix"   # SDXL's VAE finetuned to stay finite in fp16 (force_upcast: false)


def vae_dtype(vae: str | os.PathLike, dtype: torch.dtype, subfolder: Optional[str] = None) -> torch.dtype:
    """The dtype to encode in: fp16 only for a VAE that says it survives fp16, else fp32 with a warning.

    SDXL's stock VAE overflows to NaN in fp16 and marks itself `force_upcast: true` (diffusers' pipelines
    upcast it to fp32 for that reason); the fp16-fix VAE says false. bf16 has fp32's range and needs neither.
    """
    from diffusers import AutoencoderKL

    if dtype != torch.float16:
        return dtype
    try:
        config = AutoencoderKL.load_config(vae, subfolder=subfolder)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"cannot read the VAE config of {vae!r} ({str(err)[:160]}); set precompute.vae to a "
                                "VAE dir or a hub id in the offline cache, or null for the base model's VAE") from None
    if not config.get("force_upcast", True):
        return dtype
    print(f"[precompute] precompute.dtype: fp16, but the VAE of {vae} needs fp32 (force_upcast: true; SDXL's VAE "
          f"overflows to NaN in fp16): encoding in fp32. For fp16 set precompute.vae: {FP16_FIX}, or use bf16")
    return torch.float32


def load_vae(vae: str | os.PathLike, device: torch.device, dtype: torch.dtype, subfolder: Optional[str] = None):
    """An AutoencoderKL alone (no UNet, no text encoders) from a VAE dir / hub id, or from the `vae/` subfolder of
    a diffusers model (`subfolder="vae"`, found by itself in a local model dir), in `vae_dtype(dtype)`.

    For fp16 use the fp16-safe SDXL VAE (FP16_FIX): the stock SDXL VAE overflows to NaN in fp16.
    """
    from diffusers import AutoencoderKL

    sub = subfolder or ("vae" if (Path(vae) / "vae" / "config.json").is_file() else None)
    dtype = vae_dtype(vae, dtype, sub)
    try:
        model = AutoencoderKL.from_pretrained(vae, subfolder=sub, torch_dtype=dtype)
    except OSError as err:
        raise FileNotFoundError(f"cannot load the VAE {vae!r} ({str(err)[:160]}); set precompute.vae to a VAE dir "
                                "or a hub id in the offline cache, or null for the base model's VAE") from None
    return model.to(device).eval().requires_grad_(False)


def check_finite(latents: torch.Tensor, image_ids: list[str], dtype: torch.dtype) -> None:
    """Stop at the first batch whose latents hold NaN or inf: a shard of them would train on garbage."""
    bad = ~torch.isfinite(latents).flatten(1).all(dim=1)
    if bad.any():
        ids = [i for i, b in zip(image_ids, bad.tolist()) if b]
        raise UserError(f"precompute: the VAE gave NaN/inf latents in {str(dtype).replace('torch.', '')} for "
                        f"{len(ids)} image(s) ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}); set "
                        f"precompute.vae: {FP16_FIX} (the fp16-safe SDXL VAE) or precompute.dtype: bf16 or fp32")


def encode_shard(vae, rows: pd.DataFrame, resolution: int, batch_size: int) -> tuple[dict, list[dict]]:
    """Latents and latent-resolution masks for `rows` (path, mask_path, image_id, tagged1, tagged2, identity).

    Returns the shard tensors (only rows that could be read) and one record per input row: its `row` in the
    shard and SDXL micro-conditioning, or `reason` why it was skipped.
    """
    latents, masks, records = [], [], []
    for start in range(0, len(rows), batch_size):
        prepared = []
        for row in rows.iloc[start:start + batch_size].itertuples(index=False):
            try:
                prepared.append((row, prepare_image(row.path, row.mask_path, resolution)))
            except (OSError, ValueError) as err:
                records.append({"image_id": row.image_id, "reason": f"unreadable image or mask ({type(err).__name__})"})
        if not prepared:
            continue
        lat = encode_latents(vae, torch.stack([pr.pixels for _, pr in prepared]))
        check_finite(lat, [row.image_id for row, _ in prepared], next(vae.parameters()).dtype)
        msk = mask_to_latent(torch.stack([pr.mask for _, pr in prepared]), tuple(lat.shape[-2:]))
        for i, (row, pr) in enumerate(prepared):
            (oh, ow), (ct, cl) = pr.original_size, pr.crop_top_left
            records.append({"image_id": row.image_id, "reason": "", "row": sum(len(x) for x in latents) + i,
                            "original_height": oh, "original_width": ow, "crop_top": ct, "crop_left": cl,
                            "mask_fraction": float(msk[i].mean())})
        latents.append(lat)
        masks.append(msk)
    tensors = {"latents": torch.cat(latents).contiguous(), "masks": torch.cat(masks).contiguous()} if latents else {}
    return tensors, records


def time_ids(original_size: tuple[int, int], crop_top_left: tuple[int, int], resolution: int) -> list[int]:
    """SDXL micro-conditioning: original (h, w), crop (top, left), target (h, w)."""
    return [*original_size, *crop_top_left, resolution, resolution]


class ShardReader:
    """Random access to indexed latent shards through memory maps (no full load at scale)."""

    def __init__(self, index_path: str | os.PathLike, shard_dir: str | os.PathLike):
        self.index = pd.read_parquet(index_path)
        self.shard_dir = Path(shard_dir)
        if self.index.empty:
            raise ValueError(f"{index_path} has no training samples; check the mask stage's summary")
        missing = [s for s in self.index["shard"].unique() if not (self.shard_dir / s).is_file()]
        if missing:
            raise FileNotFoundError(f"shard {self.shard_dir / missing[0]} listed in {index_path} is missing; "
                                    "rerun `dvc repro precompute`")

    def __len__(self) -> int:
        return len(self.index)

    @lru_cache(maxsize=None)
    def _open(self, shard: str):
        return safe_open(str(self.shard_dir / shard), framework="pt")

    def rows(self, positions: list[int]) -> dict:
        """Latents, masks, time ids, captions and identities for these index positions."""
        rows = self.index.iloc[positions]
        latents, masks = [], []
        for shard, row in zip(rows["shard"], rows["row"]):
            handle = self._open(shard)
            latents.append(handle.get_slice("latents")[int(row):int(row) + 1])
            masks.append(handle.get_slice("masks")[int(row):int(row) + 1])
        ids = rows[["original_height", "original_width", "crop_top", "crop_left"]].to_numpy()
        res = rows["resolution"].to_numpy()[:, None]
        return {
            "latents": torch.cat(latents),
            "masks": torch.cat(masks),
            "time_ids": torch.from_numpy(np.concatenate([ids, res, res], axis=1)).float(),
            "captions1": rows["tagged1"].tolist(),
            "captions2": rows["tagged2"].tolist(),
            "identities": torch.from_numpy(rows["identity"].to_numpy().astype(np.int64)),
        }


def step_positions(step: int, batch_size: int, dataset_size: int, seed: int, rank: int = 0,
                   world_size: int = 1) -> list[int]:
    """Index positions of this rank's batch at `step`: a fresh seeded permutation every epoch.

    A pure function of (step, seed, rank), so a resumed run reads exactly the batches it would have.
    """
    per_step = batch_size * world_size
    start = step * per_step + rank * batch_size
    positions = []
    for p in range(start, start + batch_size):
        epoch, offset = divmod(p, dataset_size)
        positions.append(int(_permutation(seed, epoch, dataset_size)[offset]))
    return positions


@lru_cache(maxsize=8)
def _permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
