"""Reader for the CelebAMask-HQ release layout (a `data.source: celeba` root; docs/contracts.md, ingest).

Layout (detected by `is_celeba_hq`: both `CelebA-HQ-img/` and `CelebAMask-HQ-mask-anno/` exist):
- `CelebA-HQ-img/<idx>.jpg` (idx 0..29999, 1024x1024); the image id is the file stem (`"0"`, `"1"`, ...).
- `CelebAMask-HQ-mask-anno/<idx // 2000>/<idx:05d>_<part>.png` (512x512, white = part) for the PARTS below.
- `CelebAMask-HQ-attribute-anno.txt`: list_attr_celeba.txt format; its order is the table's order.
- `CelebA-HQ-to-CelebA-mapping.txt` (`idx orig_idx orig_file`, one header line): the CelebA file of each
  image, which gives the identity through `identity_CelebA.txt` and the split through
  `list_eval_partition.txt` when those CelebA files are copied into the root (otherwise identity -1).

The subject mask is the union of every part mask of the image (all parts belong to the one person), resized
to the image size (nearest) and written once, as an L-mode PNG with 255 = subject, to `mask_dir/<id>.png`
(ingest: `data/world/subject_masks/`, its DVC output); the table stores `mask_ref/<id>.png`.
An image with no part masks at all is kept with `mask_path` null (the mask stage's `dataset` backend then
skips it with "no mask file"); an image whose part mask is unreadable, escapes the root or has another
size than its siblings is skipped here with that reason, since a mask missing one part would be wrong.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from cocoins.data.celeba import SPLITS, _escapes, _inspect_all, _join, _read_pairs, _table, read_attributes
from cocoins.runtime import UserError

IMG_DIR = "CelebA-HQ-img"
MASK_DIR = "CelebAMask-HQ-mask-anno"
ATTR_FILE = "CelebAMask-HQ-attribute-anno.txt"
MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
PARTS = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip",
         "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
IMAGES_PER_FOLDER = 2000
_PART_FILE = re.compile(r"^(\d{5})_([a-z_]+)\.png$")


def is_celeba_hq(root: str | os.PathLike) -> bool:
    """True when `root` has the CelebAMask-HQ release layout."""
    base = Path(root)
    return (base / IMG_DIR).is_dir() and (base / MASK_DIR).is_dir()


def read_mapping(path: Path) -> dict[int, str]:
    """CelebA-HQ-to-CelebA-mapping.txt: HQ idx -> original CelebA file name (e.g. `119614.jpg`)."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not lines or lines[0][:1] != ["idx"]:
        raise UserError(f"{path}: the first line must be the header `idx orig_idx orig_file`; restore it from "
                        "the CelebAMask-HQ release")
    mapping: dict[int, str] = {}
    for n, parts in enumerate(lines[1:], 2):
        if len(parts) != 3 or not parts[0].isdigit():
            raise UserError(f"{path}:{n}: expected `idx orig_idx orig_file`, got {' '.join(parts)!r}; "
                            "fix or remove the line")
        mapping[int(parts[0])] = parts[2]
    return mapping


def list_part_masks(mask_root: Path) -> dict[int, list[Path]]:
    """Part mask files below `CelebAMask-HQ-mask-anno/<folder>/`, by image idx (parts in PARTS order).

    Files that are not `<idx:05d>_<part>.png` with a known part, or that sit in another folder than
    idx // 2000, are ignored (the release has none).
    """
    found: dict[int, list[Path]] = {}
    folders = sorted((d for d in mask_root.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    for folder in tqdm(folders, desc="listing CelebAMask-HQ part masks", unit="folder"):
        for entry in os.scandir(folder):
            match = _PART_FILE.match(entry.name)
            if match and match.group(2) in PARTS and int(match.group(1)) // IMAGES_PER_FOLDER == int(folder.name):
                found.setdefault(int(match.group(1)), []).append(Path(entry.path))
    order = {part: i for i, part in enumerate(PARTS)}
    return {idx: sorted(files, key=lambda f: order[_PART_FILE.match(f.name).group(2)])
            for idx, files in found.items()}


def union_mask(parts: list[Path], size: tuple[int, int], real_root: Path) -> tuple[Optional[np.ndarray], str]:
    """Union of the part masks (>= 128 is part), resized to `size` (width, height) nearest: 0/255 uint8."""
    union: Optional[np.ndarray] = None
    for part in parts:
        if _escapes(part, real_root):
            return None, f"part mask {part.name} escapes the data root (symlink)"
        try:
            with Image.open(part) as im:
                m = np.asarray(im.convert("L")) >= 128
        except (OSError, SyntaxError, ValueError) as err:
            return None, f"unreadable part mask {part.name} ({type(err).__name__})"
        if union is None:
            union = m
        elif m.shape != union.shape:
            return None, (f"part mask {part.name} is {m.shape[1]}x{m.shape[0]}, its siblings "
                          f"{union.shape[1]}x{union.shape[0]}")
        else:
            union |= m
    if union is None:
        raise ValueError("union_mask needs at least one part mask")
    img = Image.fromarray(np.where(union, 255, 0).astype(np.uint8))
    if img.size != size:
        img = img.resize(size, Image.Resampling.NEAREST)
    return np.asarray(img), ""


def read_celeba_hq(root: str, mask_dir: Optional[Path] = None, mask_ref: str = "data/world/subject_masks",
                   split: Optional[str] = None, limit: Optional[int] = None) -> pd.DataFrame:
    """Images table for a CelebAMask-HQ root; with `mask_dir`, composes and writes the subject masks there.

    `mask_ref` is the folder the table's `mask_path` names (where `mask_dir` ends up, repo-relative).
    Without `mask_dir` no masks are written and `mask_path` is null for every row.
    """
    base = Path(root)
    attr_file, mapping_file = base / ATTR_FILE, base / MAPPING_FILE
    if not is_celeba_hq(base) or not attr_file.is_file():
        raise UserError(f"{base} is not a CelebAMask-HQ folder: it needs {IMG_DIR}/, {MASK_DIR}/ and {ATTR_FILE} "
                        "(unpack the release there, or point data.root at it)")
    _, attributes = read_attributes(attr_file)
    mapping = read_mapping(mapping_file) if mapping_file.is_file() else {}
    identities, partitions = ({} if not (base / f).is_file() else _read_pairs(base / f)
                              for f in ("identity_CelebA.txt", "list_eval_partition.txt"))
    names = list(attributes)
    bad = [n for n in names if not PurePosixPath(n).stem.isdigit()]
    if bad:
        raise UserError(f"{attr_file}: {bad[0]!r} is not `<idx>.jpg`; the CelebAMask-HQ attribute file names "
                        "images by their number")
    if split is not None:
        if not (partitions and mapping):
            raise UserError(f"data.split = {split} on CelebAMask-HQ needs {mapping_file} and CelebA's "
                            f"{base / 'list_eval_partition.txt'}; add them or set data.split: null")
        want = str(SPLITS[split])
        names = [n for n in names if partitions.get(mapping.get(int(PurePosixPath(n).stem), "")) == want]
    names = names[:limit] if limit is not None else names
    real_root = base.resolve()
    items = []
    for name in names:
        idx = int(PurePosixPath(name).stem)
        extra = {"identity": int(identities.get(mapping.get(idx, ""), -1)), "attributes": attributes[name]}
        items.append((PurePosixPath(name).stem, _join(root, f"{IMG_DIR}/{name}"), base / IMG_DIR / name, extra, ""))
    table = _table(_inspect_all(items, real_root, "reading CelebA-HQ images"))
    if mask_dir is None:
        return table
    parts = list_part_masks(base / MASK_DIR)
    mask_dir.mkdir(parents=True, exist_ok=True)
    mask_paths, kept, reasons = list(table["mask_path"]), list(table["kept"]), list(table["reason"])
    rows = zip(table["image_id"], table["width"], table["height"])
    for i, (image_id, width, height) in enumerate(tqdm(list(rows), desc="composing CelebAMask-HQ subject masks",
                                                       unit="img")):
        files = parts.get(int(image_id), [])
        if not kept[i] or not files:
            continue   # no parts: kept, mask_path null (the mask stage says "no mask file")
        mask, reason = union_mask(files, (int(width), int(height)), real_root)
        if mask is None:
            kept[i], reasons[i] = False, reason
            continue
        Image.fromarray(mask).save(mask_dir / f"{image_id}.png")
        mask_paths[i] = f"{mask_ref}/{image_id}.png"
    return table.assign(mask_path=mask_paths, kept=kept, reason=reasons)
