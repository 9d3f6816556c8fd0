"""Latent shards: SDXL preprocessing, mask downsampling, the shard reader and batch order."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cocoins.data.shards import ShardReader, mask_to_latent, prepare_image, step_positions, time_ids


def _write(tmp_path, size=(40, 20)):
    img = Image.fromarray(np.arange(size[0] * size[1] * 3, dtype=np.uint8).reshape(size[1], size[0], 3))
    mask = Image.new("L", size, 0)
    mask.paste(255, (10, 0, 30, 20))
    img.save(tmp_path / "i.png")
    mask.save(tmp_path / "m.png")
    return tmp_path / "i.png", tmp_path / "m.png"


def test_prepare_image_resizes_short_side_and_center_crops(tmp_path):
    image, mask = _write(tmp_path)             # 40 x 20 (w x h)
    prepared = prepare_image(image, mask, 16)  # -> 32 x 16, crop 16 x 16 at left 8
    assert prepared.pixels.shape == (3, 16, 16) and prepared.mask.shape == (1, 16, 16)
    assert prepared.original_size == (20, 40) and prepared.crop_top_left == (0, 8)
    assert prepared.pixels.min() >= -1 and prepared.pixels.max() <= 1
    assert time_ids(prepared.original_size, prepared.crop_top_left, 16) == [20, 40, 0, 8, 16, 16]


def test_prepare_image_rejects_mismatched_mask(tmp_path):
    image, _ = _write(tmp_path)
    Image.new("L", (5, 5)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="mask"):
        prepare_image(image, tmp_path / "small.png", 16)


def test_mask_to_latent_majority_vote():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1          # top half
    mask[..., 4:6, :2] = 1        # a quarter of one bottom-left cell: stays background
    lat = mask_to_latent(mask, (2, 2))
    assert lat.tolist() == [[[[1.0, 1.0], [0.0, 0.0]]]]


def test_step_positions_are_a_pure_function_and_cover_each_epoch():
    a = [step_positions(k, 4, 10, seed=3) for k in range(5)]
    b = [step_positions(k, 4, 10, seed=3) for k in range(5)]
    assert a == b
    flat = sum(a, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    # Two ranks split the global batch without overlap.
    r0, r1 = step_positions(0, 2, 10, 3, rank=0, world_size=2), step_positions(0, 2, 10, 3, rank=1, world_size=2)
    assert r0 + r1 == step_positions(0, 4, 10, 3)


def test_shard_reader_round_trip(tmp_path):
    latents = torch.arange(3 * 4 * 2 * 2, dtype=torch.float32).reshape(3, 4, 2, 2)
    masks = torch.ones(3, 1, 2, 2)
    save_file({"latents": latents, "masks": masks}, str(tmp_path / "shard-00000.safetensors"))
    index = pd.DataFrame({"image_id": ["a", "b", "c"], "shard": ["shard-00000.safetensors"] * 3, "row": [0, 1, 2],
                          "tagged1": ["a <subj1>man</subj1>"] * 3, "tagged2": ["the <subj1>man</subj1>"] * 3,
                          "identity": [1, 2, 3], "original_height": [64] * 3, "original_width": [64] * 3,
                          "crop_top": [0] * 3, "crop_left": [0] * 3, "resolution": [32] * 3})
    index.to_parquet(tmp_path / "train.parquet")
    reader = ShardReader(tmp_path / "train.parquet", tmp_path)
    batch = reader.rows([2, 0])
    assert torch.equal(batch["latents"], latents[[2, 0]])
    assert batch["time_ids"].tolist() == [[64, 64, 0, 0, 32, 32]] * 2
    assert batch["identities"].tolist() == [3, 1]
    index.assign(shard="shard-00009.safetensors").to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(FileNotFoundError, match="rerun `dvc repro precompute`"):
        ShardReader(tmp_path / "bad.parquet", tmp_path)
