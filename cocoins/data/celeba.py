"""Readers that turn a dataset folder into the images table (docs/contracts.md, `data/images.parquet`).

Two layouts:
- CelebA (`read_celeba`): `img_align_celeba/`, `list_attr_celeba.txt` (the index: its file order is the
  table's order), optional `identity_CelebA.txt`, `list_eval_partition.txt`, `subject_masks/<id>.png`
  and `face_counts.txt` (the last two come with the synthetic world; real CelebA has neither).
- Any image folder (`read_folder`): every *.jpg / *.jpeg / *.png below the root, sorted; no identities,
  no attributes.

Every listed image is opened once and fully decoded, so corrupt, empty, truncated or absurdly large files
become rows with kept=False and a reason rather than crashes three stages later. Paths in the table are
the root as given joined with the relative path, so a relative root gives repo-relative paths.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path, PurePosixPath
from typing import Optional

import pandas as pd
from PIL import Image
from tqdm import tqdm

from cocoins.runtime import UserError

MAX_SIDE = 8192   # larger images are refused from the header alone, before any pixel is decoded
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLITS = {"train": 0, "val": 1, "test": 2}
COLUMNS = ["image_id", "path", "width", "height", "identity", "mask_path", "faces_annotated",
           "attributes", "kept", "reason"]


def inspect_image(path: Path) -> tuple[int, int, str]:
    """Open and decode one image; return (width, height, reason), reason "" when it is usable."""
    try:
        if path.stat().st_size == 0:
            return 0, 0, "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if max(width, height) > MAX_SIDE:
                    return width, height, f"image too large ({width}x{height}, max side {MAX_SIDE})"
                if width == 0 or height == 0:
                    return width, height, "image has no pixels"
                im.load()            # full decode: catches truncated and corrupt data
                im.convert("RGB")    # grayscale, palette, CMYK, RGBA: usable once converted
        return width, height, ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return 0, 0, f"image too large (decompression bomb guard: {str(err)[:60]})"
    except (OSError, SyntaxError, ValueError) as err:
        return 0, 0, f"unreadable image ({type(err).__name__}: {str(err)[:80]})"


def _row(image_id: str, path: str, identity: int = -1, mask_path: Optional[str] = None,
         faces: int = -1, attributes: Optional[dict] = None, reason: str = "",
         size: tuple[int, int] = (0, 0)) -> dict:
    return {"image_id": image_id, "path": path, "width": size[0], "height": size[1], "identity": identity,
            "mask_path": mask_path, "faces_annotated": faces,
            "attributes": json.dumps(attributes or {}, sort_keys=True), "kept": reason == "", "reason": reason}


def _table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"image_id": str, "path": str, "width": "int64", "height": "int64", "identity": "int64",
                      "faces_annotated": "int64", "attributes": str, "kept": bool, "reason": str})


def _join(root: str, rel: str) -> str:
    """The root as given plus a relative path, POSIX-style: no absolute paths unless the root was."""
    return str(PurePosixPath(Path(root).as_posix()) / rel)


def _escapes(path: Path, real_root: Path) -> bool:
    """True when `path` resolves (through symlinks) outside the data root."""
    return not path.resolve().is_relative_to(real_root)


def _read_pairs(path: Path) -> dict[str, str]:
    """`filename value` lines (identity, partition, face count files)."""
    pairs = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise UserError(f"{path}:{n}: expected `filename value`, got {line!r}; fix or remove the line")
        pairs[parts[0]] = parts[1]
    return pairs


def read_attributes(path: Path) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Parse list_attr_celeba.txt: count line, header of attribute names, `filename v1 ... vN` rows."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise UserError(f"{path} is not in CelebA format (first line: image count, second: attribute names)")
    names = lines[1].split()
    rows: dict[str, dict[str, int]] = {}
    for n, line in enumerate(lines[2:], 3):
        parts = line.split()
        if len(parts) != len(names) + 1 or any(v not in ("1", "-1") for v in parts[1:]):
            raise UserError(f"{path}:{n}: expected a filename and {len(names)} values of 1 or -1; "
                            "fix or remove the line")
        rows[parts[0]] = dict(zip(names, (int(v) for v in parts[1:])))
    if int(lines[0]) != len(rows):
        raise UserError(f"{path} says {int(lines[0])} images but lists {len(rows)}; the file is incomplete")
    return names, rows


def _inspect_all(items: list[tuple[str, str, Path, dict, str]], real_root: Path, desc: str) -> list[dict]:
    """Open each (image_id, table path, file path, extra row fields, skip reason) once; rows with reasons."""
    rows = []
    for image_id, table_path, file_path, extra, skip in tqdm(items, desc=desc, unit="img"):
        if skip:
            rows.append(_row(image_id, table_path, reason=skip, **extra))
        elif _escapes(file_path, real_root):
            rows.append(_row(image_id, table_path, reason="path escapes the data root (symlink)", **extra))
        elif not file_path.is_file():
            rows.append(_row(image_id, table_path, reason="image file missing", **extra))
        else:
            w, h, reason = inspect_image(file_path)
            rows.append(_row(image_id, table_path, reason=reason, size=(w, h), **extra))
    return rows


def read_celeba(root: str, split: Optional[str] = None, limit: Optional[int] = None) -> pd.DataFrame:
    """Images table for a CelebA-format folder (real CelebA or the synthetic world)."""
    base = Path(root)
    img_dir = base / "img_align_celeba"
    attr_file = base / "list_attr_celeba.txt"
    for need in (img_dir, attr_file):
        if not need.exists():
            raise UserError(f"{need} not found; data.root must be a CelebA-format folder "
                            "(img_align_celeba/, list_attr_celeba.txt)")
    _, attributes = read_attributes(attr_file)
    optional = {name: _read_pairs(base / name) if (base / name).is_file() else {}
                for name in ("identity_CelebA.txt", "list_eval_partition.txt", "face_counts.txt")}
    identities, partitions, faces = (optional[n] for n in ("identity_CelebA.txt", "list_eval_partition.txt",
                                                             "face_counts.txt"))
    names = list(attributes)
    if split is not None:
        if not partitions:
            raise UserError(f"data.split = {split} needs {base / 'list_eval_partition.txt'}; add it or set "
                            "data.split: null")
        names = [n for n in names if partitions.get(n) == str(SPLITS[split])]
    names = names[:limit] if limit is not None else names
    real_root = base.resolve()
    items = []
    for name in names:
        stem = PurePosixPath(name).stem
        mask_file = base / "subject_masks" / f"{stem}.png"
        extra = {"identity": int(identities.get(name, -1)), "faces": int(faces.get(name, -1)),
                 "attributes": attributes[name],
                 "mask_path": _join(root, f"subject_masks/{stem}.png") if mask_file.is_file() else None}
        items.append((stem, _join(root, f"img_align_celeba/{name}"), img_dir / name, extra, ""))
    return _table(_inspect_all(items, real_root, "reading CelebA images"))


def list_folder_images(root: Path) -> list[Path]:
    """Image files below `root`, relative to it, sorted (the folder source's file order)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in filenames:
            if fn.lower().endswith(IMAGE_SUFFIXES) and not fn.startswith("."):
                found.append((Path(dirpath) / fn).relative_to(root))
    return sorted(found, key=lambda p: p.as_posix())


def read_folder(root: str, limit: Optional[int] = None) -> pd.DataFrame:
    """Images table for a plain image folder: identity -1, no attributes, no masks, no face counts."""
    base = Path(root)
    if not base.is_dir():
        raise UserError(f"{base} is not a folder; set data.root to a folder of images")
    files = list_folder_images(base)
    files = files[:limit] if limit is not None else files
    real_root = base.resolve()
    items, seen = [], set()
    for rel in files:
        # Ids must be unique (they name mask files): nested files get their folder path in the id.
        image_id = rel.with_suffix("").as_posix().replace("/", "__")
        skip = "duplicate image id (same name, other extension)" if image_id in seen else ""
        seen.add(image_id)
        items.append((image_id, _join(root, rel.as_posix()), base / rel, {}, skip))
    return _table(_inspect_all(items, real_root, "reading image folder"))
