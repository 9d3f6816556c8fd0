"""Latent shards: SDXL-style image preprocessing, VAE encoding, safetensors shards and their reader.

Training reads these shards, never images. Each shard holds `latents` [N, 4, h, w] (already multiplied by
the VAE scaling factor) and `masks` [N, 1, h, w] (the subject mask m at latent resolution, in {0, 1});
`data/train.parquet` indexes them row by row with the captions and SDXL's micro-conditioning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

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
