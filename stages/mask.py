"""mask: one subject mask per single-person image (data/masks/, data/subjects.parquet).

Keeps an image when it has a tagged subject, a non-empty subject mask and 1..max_faces faces (the paper
trains on single-subject images: max_faces 1). Every kept input image gets a row with its reason.
Masks: `dataset` (shipped with the data) or `grounded_sam2`; faces: `mtcnn`, `grounding` or `annotation`.
Grounding DINO (`mask.detector_impl`): transformers' port (hub id or dir) or the original groundingdino package
(a config .py and a .pth, as the Grounded-SAM-2 repository ships them).
Restartable: masks and raw face counts go chunk by chunk to data/work/mask/; the face-count decision
(MTCNN checked against the annotation) is taken once over all rows, then data/masks/ is written at once.
"""

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cocoins.backends.faces import decide_counts, make_face_counter
from cocoins.backends.masks import make_masker
from cocoins.backends.preflight_data import mask_problems
from cocoins.checks import require
from cocoins.config import load_params
from cocoins.data.workdir import KEY, Dist, WorkDir, result_config, row_keys, run_chunked, stage_device
from cocoins.io import atomic_dir, atomic_path, read_parquet, write_parquet
from cocoins.runtime import print_summary, run_stage

MASKS, OUT, WORK = Path("data/masks"), Path("data/subjects.parquet"), Path("data/work/mask")
COLUMNS = ["image_id", "mask_path", "face_count", "face_counter", "mask_fraction", "kept", "reason"]
INPUT = ["image_id", "path", "width", "height", "mask_path", "faces_annotated", "tagged1", "tagged2"]


def make_models(p, dist: Dist, all_annotated: bool):
    """(masker, raw face counter, counter name, detector or None); Grounding DINO is loaded once and shared."""
    device = stage_device(p.device, dist)
    detector = face = None
    if p.backend == "grounded_sam2" or p.face_counter == "grounding":
        from cocoins.backends.grounded_sam2 import GroundingFaceCounter, make_detector

        detector = make_detector(p, device)
        face = GroundingFaceCounter(detector, p.face_threshold, p.text_threshold, p.batch_size)
    counter, name = make_face_counter(p.face_counter, all_annotated, grounding=face)
    return make_masker(p, device, detector), counter, name, detector


def mask_chunk(chunk: pd.DataFrame, masker, counter, work_masks: Path) -> pd.DataFrame:
    """Masks (saved to the work dir) and raw face counts for a chunk of candidate rows."""
    results = [(None, "no tagged subject")] * len(chunk)
    has = np.flatnonzero(chunk["has_subject"].to_numpy())
    for k, result in zip(has, masker.mask_rows(chunk.iloc[has])):
        results[k] = result
    ok = [k for k, (m, _) in enumerate(results) if m is not None]
    detected = dict(zip(ok, counter.count(chunk.iloc[ok]) if ok else []))
    rows = []
    for k, ((mask, reason), image_id, key) in enumerate(zip(results, chunk["image_id"], chunk[KEY])):
        if mask is not None:
            with atomic_path(work_masks / f"{image_id}.png") as tmp:
                Image.fromarray(mask, mode="L").save(tmp, format="PNG")
        rows.append({"image_id": image_id, "mask_fraction": float(np.mean(mask > 0)) if mask is not None
                     else float("nan"), "reason": reason, "face_detected": int(detected.get(k, -1)), KEY: key})
    return pd.DataFrame(rows, columns=["image_id", "mask_fraction", "reason", "face_detected", KEY])


def main() -> None:
    params = load_params()
    p = params.mask
    dist = Dist(p.device, params.launch.barrier_timeout_s)
    images = read_parquet("data/images.parquet", "ingest")
    tagged = read_parquet("data/tagged.parquet", "tag")
    upstream = int((~images["kept"]).sum())
    images = images[images["kept"]].reset_index(drop=True)
    tags = tagged[tagged["kept"]].drop_duplicates("image_id").set_index("image_id")[["tagged1", "tagged2"]]
    images = images.join(tags, on="image_id")
    images["has_subject"] = images["tagged1"].notna()
    images[["tagged1", "tagged2"]] = images[["tagged1", "tagged2"]].fillna("")
    images[KEY] = row_keys(images, INPUT)
    all_annotated = bool(len(images)) and bool((images["faces_annotated"] >= 0).all())
    require("mask", mask_problems(p, all_annotated))
    work = WorkDir.open(WORK, result_config(p), dist)
    (WORK / "masks").mkdir(parents=True, exist_ok=True)
    masker, counter, counter_name, detector = make_models(p, dist, all_annotated)

    run = run_chunked(images, lambda c: mask_chunk(c, masker, counter, WORK / "masks"), work, p.chunk_size,
                      "masks + faces", dist)
    if run.table is None:
        return
    table = run.table
    # Faces are counted only where everything else passed; the counts are decided over all of those at once.
    candidates = np.flatnonzero((table["reason"] == "").to_numpy())
    faces = decide_counts(table["face_detected"].iloc[candidates].tolist(),
                          images["faces_annotated"].iloc[candidates].tolist(), counter_name)
    rows = [{"image_id": i, "mask_path": None, "face_count": -1, "face_counter": "", "mask_fraction": f,
             "kept": r == "", "reason": r}
            for i, f, r in zip(table["image_id"], table["mask_fraction"], table["reason"])]
    for k, n, counter_used in zip(candidates, faces.counts, faces.counters):
        r = rows[k]
        r["face_count"], r["face_counter"] = n, counter_used
        r["reason"] = ("face count unknown" if n < 0 else "no face" if n == 0
                       else f"{n} faces (max {p.max_faces})" if n > p.max_faces else "")
        r["kept"] = r["reason"] == ""
        if r["kept"]:
            r["mask_path"] = (MASKS / f"{r['image_id']}.png").as_posix()

    with atomic_dir(MASKS) as tmp:
        for r in rows:
            if r["kept"]:
                shutil.copyfile(WORK / "masks" / f"{r['image_id']}.png", tmp / f"{r['image_id']}.png")
    out = pd.DataFrame(rows, columns=COLUMNS).astype(
        {"image_id": str, "face_count": "int64", "face_counter": str, "mask_fraction": "float64", "kept": bool,
         "reason": str})
    write_parquet(out, OUT)
    counted = Counter(faces.counters)
    print_summary("mask", int(out["kept"].sum()), Counter(out.loc[~out["kept"], "reason"]),
                  {"mask backend": masker.name, "detector": detector.describe() if detector else "none",
                   "faces": faces.note,
                   "counter per row": ", ".join(f"{k} {v}" for k, v in sorted(counted.items())) or "none",
                   "processed now / reused from data/work/mask": f"{run.processed} / {run.reused}",
                   "skipped upstream (ingest)": upstream})


if __name__ == "__main__":
    run_stage(main)
