"""Subject masks (the paper's L_dis^m and background loss need them, Eqs. 7-8).

`DatasetMasks` reads the mask shipped with the data (`mask_path` of the images table: the synthetic
world's `subject_masks/<id>.png`), binarises it and checks it fits the image. The paper segments with
Grounded SAM 2: `GroundedSam2Masker` in grounded_sam2.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from cocoins.runtime import UserError


class Masker(Protocol):
    name: str

    def mask_rows(self, rows: pd.DataFrame) -> list[tuple[Optional[np.ndarray], str]]:
        """Per images-table row (path, mask_path, width, height, tagged1, tagged2): mask or skip reason."""
        ...


@dataclass
class DatasetMasks:
    """Masks that come with the dataset; 255 (or anything >= 128) is subject."""
    name: str = "dataset"

    def mask(self, path: str, mask_path: Optional[str], size: tuple[int, int]) -> tuple[Optional[np.ndarray], str]:
        """Binary uint8 mask (0 / 255) of shape (height, width), or None and the skip reason."""
        if not isinstance(mask_path, str) or not Path(mask_path).is_file():
            return None, "no mask file"
        try:
            with Image.open(mask_path) as im:
                m = np.asarray(im.convert("L"))
        except (OSError, SyntaxError, ValueError) as err:
            return None, f"unreadable mask file ({type(err).__name__})"
        if (m.shape[1], m.shape[0]) != tuple(size):
            return None, f"mask size {m.shape[1]}x{m.shape[0]} does not match image {size[0]}x{size[1]}"
        m = np.where(m >= 128, 255, 0).astype(np.uint8)
        if not m.any():
            return None, "empty mask"
        return m, ""

    def mask_rows(self, rows: pd.DataFrame) -> list[tuple[Optional[np.ndarray], str]]:
        return [self.mask(path, mask_path, (int(w), int(h))) for path, mask_path, w, h
                in zip(rows["path"], rows["mask_path"], rows["width"], rows["height"])]


def make_masker(p, device=None, detector=None) -> Masker:
    """The masker for the `mask` params group (`MaskParams`); `detector`: a shared GroundingDino."""
    if p.backend == "dataset":
        return DatasetMasks()
    if p.backend == "grounded_sam2":
        from cocoins.backends.grounded_sam2 import GroundedSam2Masker, Sam2Boxes

        if detector is None:
            raise UserError("mask.backend: grounded_sam2 needs a Grounding DINO detector (mask.detector)")
        sam = Sam2Boxes(p.sam2_config, p.sam2_checkpoint, device, tuple(p.sam2_overrides or ()))
        return GroundedSam2Masker(detector, sam, p.box_threshold, p.text_threshold, batch_size=p.batch_size)
    raise UserError(f"unknown mask.backend {p.backend!r}; use dataset or grounded_sam2")
