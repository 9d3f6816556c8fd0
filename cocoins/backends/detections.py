"""What an open-set detector returns for one image: boxes, scores and the prompt words each box matched.

Its own file so that the detector backends (`grounded_sam2`'s transformers port, `groundingdino_original`)
share the type without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray    # [K, 4] x0, y0, x1, y1 in pixels of the original image
    scores: np.ndarray   # [K]
    labels: list[str]    # prompt words over the text threshold, per box
