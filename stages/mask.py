"""mask: one subject mask per single-person image (data/masks/, data/subjects.parquet).

Keeps an image when it has a tagged subject, a non-empty subject mask and 1..max_faces faces (the paper
trains on single-subject images: max_faces 1). Every kept input image gets a row with its reason.
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from cocoins.backends.faces import count_faces
from cocoins.backends.masks import make_masker
from cocoins.config import load_params
from cocoins.io import atomic_dir, read_parquet, write_parquet
from cocoins.runtime import print_summary, run_stage

MASKS = Path("data/masks")
OUT = Path("data/subjects.parquet")
COLUMNS = ["image_id", "mask_path", "face_count", "face_counter", "mask_fraction", "kept", "reason"]


def main() -> None:
    p = load_params().mask
    images = read_parquet("data/images.parquet", "ingest")
    tagged = read_parquet("data/tagged.parquet", "tag")
    upstream = int((~images["kept"]).sum())
    images = images[images["kept"]].reset_index(drop=True)
    has_subject = set(tagged.loc[tagged["kept"], "image_id"])
    masker = make_masker(p.backend)

    rows, masks = [], {}
    for row in tqdm(images.itertuples(index=False), total=len(images), desc="masks", unit="img"):
        mask, reason = None, "no tagged subject"
        if row.image_id in has_subject:
            mask, reason = masker.mask(row.path, row.mask_path, (row.width, row.height))
        if mask is not None:
            masks[row.image_id] = mask
        rows.append({"image_id": row.image_id, "mask_path": None, "face_count": -1, "face_counter": "",
                     "mask_fraction": float(np.mean(mask > 0)) if mask is not None else float("nan"),
                     "kept": reason == "", "reason": reason})

    # Faces are counted only where everything else passed: on real data the detector is the slow part.
    candidates = [k for k, r in enumerate(rows) if r["kept"]]
    faces = count_faces(images.iloc[candidates], p.face_counter)
    for k, n, counter in zip(candidates, faces.counts, faces.counters):
        r = rows[k]
        r["face_count"], r["face_counter"] = n, counter
        r["reason"] = ("face count unknown" if n < 0 else "no face" if n == 0
                       else f"{n} faces (max {p.max_faces})" if n > p.max_faces else "")
        r["kept"] = r["reason"] == ""
        if r["kept"]:
            r["mask_path"] = (MASKS / f"{r['image_id']}.png").as_posix()

    with atomic_dir(MASKS) as tmp:
        for r in rows:
            if r["kept"]:
                Image.fromarray(masks[r["image_id"]], mode="L").save(tmp / f"{r['image_id']}.png", format="PNG")
    table = pd.DataFrame(rows, columns=COLUMNS).astype(
        {"image_id": str, "face_count": "int64", "face_counter": str, "mask_fraction": "float64", "kept": bool,
         "reason": str})
    write_parquet(table, OUT)
    counted = Counter(faces.counters)
    print_summary("mask", int(table["kept"].sum()), Counter(table.loc[~table["kept"], "reason"]),
                  {"mask backend": masker.name, "faces": faces.note,
                   "counter per row": ", ".join(f"{k} {v}" for k, v in sorted(counted.items())) or "none",
                   "skipped upstream (ingest)": upstream})


if __name__ == "__main__":
    run_stage(main)
