"""Face counters for the single-subject filter of the mask stage (the paper trains on one face per image).

- `MtcnnFaceCounter`: facenet-pytorch's MTCNN (its wheel ships the P/R/O-Net weights, so it runs
  offline), on CPU, counting detections at or above a probability threshold.
- `AnnotationFaceCounter`: the dataset's own count (`faces_annotated`, from face_counts.txt).

`count_faces` is what the stage calls. With `mtcnn` it checks the detector against the annotation
wherever the dataset has one; if MTCNN disagrees too often (it misses many drawn faces of the synthetic
world), the annotated rows use the annotation instead, each row records which counter gave its count,
and the returned note says so with the numbers. It never pretends: unknown counts stay -1.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from cocoins.runtime import UserError

RELIABLE_AGREEMENT = 0.95   # MTCNN must match the annotation on this share of images to be trusted


@dataclass
class MtcnnFaceCounter:
    """Counts faces with MTCNN on CPU; small images are upscaled so faces reach `min_face_size`."""
    threshold: float = 0.9        # final (O-Net) face probability to count a detection
    min_face_size: int = 20
    min_side: int = 160           # upscale images whose short side is smaller (MTCNN's own crop size)
    batch_size: int = 32
    name: str = "mtcnn"
    _model: object = field(default=None, repr=False)

    def _mtcnn(self):
        if self._model is None:
            from facenet_pytorch import MTCNN  # imported late: heavy, and only this counter needs it
            self._model = MTCNN(keep_all=True, device="cpu", min_face_size=self.min_face_size)
        return self._model

    def _prepare(self, path: str) -> Image.Image:
        img = Image.open(path).convert("RGB")
        short = min(img.size)
        if short < self.min_side:
            f = self.min_side / short
            img = img.resize((round(img.width * f), round(img.height * f)), Image.BICUBIC)
        return img

    def _count_batch(self, images: list[Image.Image]) -> list[int]:
        _, probs = self._mtcnn().detect(images)
        return [0 if p is None or p[0] is None else int(np.sum(np.asarray(p, dtype=float) >= self.threshold))
                for p in probs]

    def count(self, rows: pd.DataFrame) -> list[int]:
        """Face count per row (reads `path`); -1 where the detector failed on the image."""
        counts = [-1] * len(rows)
        by_size: dict[tuple[int, int], list[tuple[int, Image.Image]]] = defaultdict(list)
        for k, path in enumerate(rows["path"]):
            try:
                img = self._prepare(path)
            except OSError:
                continue
            by_size[img.size].append((k, img))  # MTCNN batches need equal sizes
        batches = [group[i:i + self.batch_size] for group in by_size.values()
                   for i in range(0, len(group), self.batch_size)]
        # MTCNN's small convolutions ran ~18x slower with 2 torch threads than with 1 on a 2-core CPU
        # (100 images: 25 s vs 1.4 s), so count single-threaded and restore the setting afterwards.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for batch in tqdm(batches, desc="counting faces (MTCNN)", unit="batch"):
                for (k, _), n in zip(batch, self._count_safely([img for _, img in batch])):
                    counts[k] = n
        finally:
            torch.set_num_threads(threads)
        return counts

    def _count_safely(self, images: list[Image.Image]) -> list[int]:
        try:
            return self._count_batch(images)
        except (RuntimeError, ValueError):  # one bad image spoils a batch: retry one by one, -1 on failure
            if len(images) == 1:
                return [-1]
            return [n for img in images for n in self._count_safely([img])]


@dataclass
class AnnotationFaceCounter:
    """The dataset's own face count per row (`faces_annotated`, -1 when unknown)."""
    name: str = "annotation"

    def count(self, rows: pd.DataFrame) -> list[int]:
        return [int(v) for v in rows["faces_annotated"]]


@dataclass(frozen=True)
class FaceCounts:
    counts: list[int]      # per row; -1 unknown
    counters: list[str]    # per row: which counter gave the count
    note: str              # one summary line: which counter was used and why


def count_faces(rows: pd.DataFrame, counter: str, mtcnn: Optional[MtcnnFaceCounter] = None) -> FaceCounts:
    """Face counts for `rows` (images table rows) with the `mask.face_counter` param's counter."""
    n = len(rows)
    annotated = np.asarray([int(v) for v in rows["faces_annotated"]], dtype=int)
    if counter == "annotation":
        counts = AnnotationFaceCounter().count(rows)
        return FaceCounts(counts, ["annotation"] * n, "face counts from dataset annotation (mask.face_counter)")
    if counter == "grounding":
        raise UserError("mask.face_counter: grounding is not available yet (it comes with the Grounded SAM 2 "
                        "backend in a later issue); set mask.face_counter: mtcnn or annotation")
    if counter != "mtcnn":
        raise UserError(f"unknown mask.face_counter {counter!r}; use mtcnn or annotation")
    has = annotated >= 0
    try:
        detected = np.asarray((mtcnn or MtcnnFaceCounter()).count(rows), dtype=int) if n else np.zeros(0, int)
    except ImportError as err:
        if n and has.all():
            return FaceCounts([int(v) for v in annotated], ["annotation"] * n,
                              f"face counts from dataset annotation: MTCNN is not installed ({err})")
        raise UserError(f"mask.face_counter: mtcnn needs facenet-pytorch ({err}); run `make install` or set "
                        "mask.face_counter: annotation") from None
    if not has.any():
        return FaceCounts([int(v) for v in detected], ["mtcnn"] * n,
                          "face counts from MTCNN (no annotation to check it against)")
    total = int(has.sum())
    right = int((detected[has] == annotated[has]).sum())
    found = int((detected[has] > 0).sum())
    if right / total >= RELIABLE_AGREEMENT:
        return FaceCounts([int(v) for v in detected], ["mtcnn"] * n,
                          f"face counts from MTCNN (matches the annotation on {right}/{total} images)")
    counts = np.where(has, annotated, detected)
    counters = ["annotation" if h else "mtcnn" for h in has]
    note = (f"face counts from dataset annotation: MTCNN found faces in only {found}/{total} annotated images "
            f"and counted them right in {right}/{total} (needs {RELIABLE_AGREEMENT:.0%})")
    return FaceCounts([int(v) for v in counts], counters, note)
