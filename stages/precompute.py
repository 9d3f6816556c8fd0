"""precompute: SDXL VAE latents of the kept training images into safetensors shards + a Parquet index.

Restartable and shardable like the other model stages: each chunk of `shard_size` rows becomes one shard in
data/work/precompute/ as soon as it is encoded; the final data/latents/ (hard links to those shards, renumbered
in order) and data/train.parquet are written once at the end. Only the VAE is loaded (the base model's
`vae/`, or `precompute.vae`: the fp16-safe SDXL VAE for fp16; the stock one is encoded in fp32 under fp16);
every batch of latents is checked for NaN / inf. Rows whose `<subj>` tag falls past the base model's text
window are skipped here with the reason (cocoins/data/window.py), not found by training hours in.
"""

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

from cocoins.backends.chat import torch_dtype
from cocoins.backends.preflight_data import precompute_problems
from cocoins.checks import require
from cocoins.config import load_params
from cocoins.data.shards import SHARD_PATTERN, encode_shard, load_vae
from cocoins.data.tags import parse_tagged
from cocoins.data.window import load_tokenizers, window_reasons
from cocoins.data.workdir import KEY, Dist, WorkDir, result_config, row_keys, run_chunked, stage_device
from cocoins.io import atomic_dir, atomic_path, read_parquet, write_parquet
from cocoins.runtime import UserError, print_summary, run_stage, seed_everything
from cocoins.sdxl.load import resolve_model

BASE = Path("models/base")
LATENT_DIR, INDEX, WORK = Path("data/latents"), Path("data/train.parquet"), Path("data/work/precompute")
INPUT = ["image_id", "path", "identity", "tagged1", "tagged2", "mask_path"]
INDEX_COLUMNS = ["image_id", "shard", "row", "tagged1", "tagged2", "spans1", "spans2", "identity",
                 "original_height", "original_width", "crop_top", "crop_left", "resolution", "mask_fraction"]


def spans_json(tagged: str) -> str:
    """Subject spans of a tagged caption as JSON [[subject index, start, end], ...] (character offsets)."""
    return json.dumps([[s.index, s.start, s.end] for s in parse_tagged(tagged).spans])


def base_vae_fingerprint(base: Path = BASE) -> str:
    """Which VAE models/base holds: its reference.json, or the tiny VAE's files (a new base redoes the work)."""
    files = [base / "reference.json"] if (base / "reference.json").is_file() else sorted((base / "vae").glob("*"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + f.read_bytes())
    return digest.hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)      # shards can be GBs: the final directory links the work dir's files
    except OSError:
        shutil.copyfile(src, dst)


def main() -> None:
    params = load_params()
    p = params.precompute
    require("precompute", precompute_problems(p, BASE.as_posix()))
    dist = Dist(p.device, params.launch.barrier_timeout_s)
    seed_everything(0)
    base = resolve_model(BASE)
    images = read_parquet("data/images.parquet", "ingest")
    tagged = read_parquet("data/tagged.parquet", "tag")
    subjects = read_parquet("data/subjects.parquet", "mask")
    rows = (images[images.kept][["image_id", "path", "identity"]]
            .merge(tagged[tagged.kept][["image_id", "tagged1", "tagged2"]], on="image_id")
            .merge(subjects[subjects.kept][["image_id", "mask_path"]], on="image_id")
            .sort_values("image_id").reset_index(drop=True))
    skipped = Counter({"dropped by an earlier stage": len(images) - len(rows)})
    window = pd.Series(window_reasons(rows["tagged1"].tolist(), rows["tagged2"].tolist(), load_tokenizers(base)),
                       dtype=str)
    skipped.update(window[window != ""].tolist())
    rows = rows[(window == "").to_numpy()].reset_index(drop=True)
    if rows.empty:   # nothing to encode: train would have no data, so say which stage dropped what, now
        raise UserError(f"precompute: no image is left to encode ({dict(skipped)}); see the reasons in "
                        "data/subjects.parquet and data/tagged.parquet")
    rows[KEY] = row_keys(rows, INPUT)
    work = WorkDir.open(WORK, result_config(p) | {"base_vae": base_vae_fingerprint()}, dist)
    device = stage_device(p.device, dist)
    dtype = torch_dtype(p.dtype, device)
    vae = None

    def process(chunk: pd.DataFrame) -> pd.DataFrame:
        nonlocal vae
        if vae is None:
            vae = load_vae(p.vae, device, dtype) if p.vae else load_vae(base, device, dtype, subfolder="vae")
        tensors, records = encode_shard(vae, chunk, p.resolution, p.batch_size)
        name = f"work-{hashlib.sha256(''.join(chunk[KEY]).encode()).hexdigest()[:16]}.safetensors"
        if tensors:
            with atomic_path(WORK / name) as tmp:
                save_file(tensors, str(tmp))
        out = pd.DataFrame(records).assign(work_shard=name)
        return chunk[["image_id", KEY]].merge(out, on="image_id", how="left")

    run = run_chunked(rows, process, work, p.shard_size, "precompute", dist)
    if run.table is None:
        return
    table = pd.concat([rows.drop(columns=KEY), run.table.drop(columns="image_id")], axis=1)
    for reason, n in Counter(table.loc[table["reason"] != "", "reason"]).items():
        skipped[reason] += n
    table = table[table["reason"] == ""].reset_index(drop=True)
    # The losses compare x0 estimates inside the subject mask m (L_dis^m): with m empty at latent resolution
    # (a subject smaller than a latent cell) the consistency terms of the sample are 0 and 1 / 0.
    empty = table["mask_fraction"] == 0
    if empty.any():
        skipped["subject mask empty at latent resolution"] += int(empty.sum())
        table = table[~empty].reset_index(drop=True)
    order = list(dict.fromkeys(table["work_shard"]))   # work shards in input order -> shard-00000, ...
    names = {w: SHARD_PATTERN.format(k) for k, w in enumerate(order)}
    with atomic_dir(LATENT_DIR) as tmp:
        for w, name in names.items():
            link_or_copy(WORK / w, tmp / name)
    table["shard"] = table["work_shard"].map(names)
    table["spans1"], table["spans2"] = table["tagged1"].map(spans_json), table["tagged2"].map(spans_json)
    table["resolution"] = p.resolution
    index = table[INDEX_COLUMNS].astype({"row": "int64", "identity": "int64", "original_height": "int64",
                                         "original_width": "int64", "crop_top": "int64", "crop_left": "int64"})
    write_parquet(index, INDEX)
    print_summary("precompute", len(index), skipped,
                  {"shards": len(names), "vae": p.vae or f"{base} (vae/)",
                   "dtype": str(next(vae.parameters()).dtype if vae else dtype).replace("torch.", ""),
                   "processed now / reused from data/work/precompute": f"{run.processed} / {run.reused}"})


if __name__ == "__main__":
    run_stage(main)
