"""precompute: SDXL VAE latents of the kept training images into safetensors shards + a Parquet index."""

from collections import Counter
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from cocoins.config import load_params
from cocoins.data.shards import SHARD_PATTERN, encode_latents, mask_to_latent, prepare_image, time_ids
from cocoins.io import atomic_dir, read_parquet, write_parquet
from cocoins.runtime import print_summary, resolve_device, run_stage, seed_everything
from cocoins.sdxl.load import load_pipeline

LATENT_DIR, INDEX = Path("data/latents"), Path("data/train.parquet")


def main() -> None:
    p = load_params().precompute
    seed_everything(0)
    images = read_parquet("data/images.parquet", "ingest")
    tagged = read_parquet("data/tagged.parquet", "tag")
    subjects = read_parquet("data/subjects.parquet", "mask")
    rows = (images[images.kept][["image_id", "path", "identity"]]
            .merge(tagged[tagged.kept][["image_id", "tagged1", "tagged2"]], on="image_id")
            .merge(subjects[subjects.kept][["image_id", "mask_path"]], on="image_id")
            .sort_values("image_id").reset_index(drop=True))
    skipped = Counter({"dropped by an earlier stage": len(images) - len(rows)})

    vae = load_pipeline("models/base", device=resolve_device("auto"), dtype=torch.float32).vae
    index, prepared_rows = [], []
    with atomic_dir(LATENT_DIR) as tmp:
        shard_latents, shard_masks, shard_no = [], [], 0

        def flush():
            nonlocal shard_latents, shard_masks, shard_no
            if shard_latents:
                save_file({"latents": torch.cat(shard_latents).contiguous(),
                           "masks": torch.cat(shard_masks).contiguous()}, str(tmp / SHARD_PATTERN.format(shard_no)))
                shard_latents, shard_masks, shard_no = [], [], shard_no + 1

        in_shard = 0
        for start in tqdm(range(0, len(rows), p.batch_size), desc="precompute"):
            chunk = rows.iloc[start:start + p.batch_size]
            prepared = []
            for row in chunk.itertuples():
                try:
                    prepared.append((row, prepare_image(row.path, row.mask_path, p.resolution)))
                except (OSError, ValueError) as err:
                    skipped[f"unreadable image or mask ({type(err).__name__})"] += 1
                    print(f"[precompute] skip {row.image_id}: {err}")
            if not prepared:
                continue
            latents = encode_latents(vae, torch.stack([pr.pixels for _, pr in prepared]))
            masks = mask_to_latent(torch.stack([pr.mask for _, pr in prepared]), tuple(latents.shape[-2:]))
            for i, (row, pr) in enumerate(prepared):
                if in_shard == p.shard_size:
                    flush()
                    in_shard = 0
                shard_latents.append(latents[i:i + 1])
                shard_masks.append(masks[i:i + 1])
                (oh, ow), (ct, cl) = pr.original_size, pr.crop_top_left
                index.append({"image_id": row.image_id, "shard": SHARD_PATTERN.format(shard_no), "row": in_shard,
                              "tagged1": row.tagged1, "tagged2": row.tagged2, "identity": int(row.identity),
                              "original_height": oh, "original_width": ow, "crop_top": ct, "crop_left": cl,
                              "resolution": p.resolution, "mask_fraction": float(masks[i].mean())})
                in_shard += 1
        flush()
    index = pd.DataFrame(index)
    write_parquet(index, INDEX)
    empty = int((index["mask_fraction"] == 0).sum()) if len(index) else 0
    print_summary("precompute", len(index), skipped,
                  {"shards": index["shard"].nunique() if len(index) else 0,
                   "latent shape": list(latents.shape[1:]) if len(index) else None,
                   "masks empty at latent resolution": empty})


if __name__ == "__main__":
    run_stage(main)
