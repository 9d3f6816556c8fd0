"""Face counters for the single-subject filter of the mask stage (the paper trains on one face per image).

- `MtcnnFaceCounter`: facenet-pytorch's MTCNN (its wheel ships the P/R/O-Net weights, so it runs
  offline), on CPU, counting detections at or above a probability threshold.
- `AnnotationFaceCounter`: the dataset's own count (`faces_annotated`, from face_counts.txt).
- `GroundingFaceCounter` (grounded_sam2.py): Grounding DINO boxes for "face", as the paper did.

The stage counts per chunk with a raw counter (`make_face_counter`) and decides once over all rows
(`decide_counts`); `count_faces` does both in one go. With `mtcnn` it checks the detector against the annotation
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


def decide_counts(detected: list[int], annotated: list[int], counter: str) -> FaceCounts:
    """Final face counts from a detector's raw counts and the dataset's annotation (-1 = unknown).

    `grounding` and `annotation` counts are used as they are. `mtcnn` counts are checked against the
    annotation wherever there is one, over all rows at once (so a chunked, restarted run decides the same).
    """
    n = len(detected)
    if counter in ("annotation", "grounding"):
        note = ("face counts from dataset annotation (mask.face_counter)" if counter == "annotation"
                else "face counts from Grounding DINO boxes for \"face\" (mask.face_counter)")
        return FaceCounts([int(v) for v in detected], [counter] * n, note)
    if counter != "mtcnn":
        raise UserError(f"unknown mask.face_counter {counter!r}; use mtcnn, grounding or annotation")
    detected_a = np.asarray(detected, dtype=int).reshape(-1)
    annotated_a = np.asarray(annotated, dtype=int).reshape(-1)
    has = annotated_a >= 0
    if not has.any():
        return FaceCounts([int(v) for v in detected_a], ["mtcnn"] * n,
                          "face counts from MTCNN (no annotation to check it against)")
    total = int(has.sum())
    right = int((detected_a[has] == annotated_a[has]).sum())
    found = int((detected_a[has] > 0).sum())
    if right / total >= RELIABLE_AGREEMENT:
        return FaceCounts([int(v) for v in detected_a], ["mtcnn"] * n,
                          f"face counts from MTCNN (matches the annotation on {right}/{total} images)")
    counts = np.where(has, annotated_a, detected_a)
    counters = ["annotation" if h else "mtcnn" for h in has]
    note = (f"face counts from dataset annotation: MTCNN found faces in only {found}/{total} annotated images "
            f"and counted them right in {right}/{total} (needs {RELIABLE_AGREEMENT:.0%})")
    return FaceCounts([int(v) for v in counts], counters, note)


def make_face_counter(counter: str, all_annotated: bool, mtcnn: Optional[MtcnnFaceCounter] = None,
                      grounding=None):
    """(raw counter, its name) for `mask.face_counter`; without facenet-pytorch, mtcnn falls back to the
    annotation when every image has one, else stops with the fix."""
    if counter == "annotation":
        return AnnotationFaceCounter(), "annotation"
    if counter == "grounding":
        if grounding is None:
            raise UserError("mask.face_counter: grounding needs a Grounding DINO detector (mask.detector)")
        return grounding, "grounding"
    if counter != "mtcnn":
        raise UserError(f"unknown mask.face_counter {counter!r}; use mtcnn, grounding or annotation")
    if mtcnn is None:
        try:
            import facenet_pytorch  # noqa: F401  (checked here, used by MtcnnFaceCounter)
        except ImportError as err:
            if all_annotated:
                print(f"[mask] MTCNN is not installed ({err}); using the dataset's face annotation")
                return AnnotationFaceCounter(), "annotation"
            raise UserError(f"mask.face_counter: mtcnn needs facenet-pytorch ({err}); run `make install` or set "
                            "mask.face_counter: annotation") from None
    return mtcnn or MtcnnFaceCounter(), "mtcnn"


def count_faces(rows: pd.DataFrame, counter: str, mtcnn: Optional[MtcnnFaceCounter] = None,
                grounding=None) -> FaceCounts:
    """Face counts for `rows` (images table rows) with the `mask.face_counter` param's counter, in one go."""
    annotated = [int(v) for v in rows["faces_annotated"]]
    has = np.asarray(annotated, dtype=int) >= 0
    try:
        raw, name = make_face_counter(counter, bool(len(rows)) and bool(has.all()), mtcnn, grounding)
        detected = raw.count(rows) if len(rows) else []
    except ImportError as err:
        if len(rows) and has.all():
            return FaceCounts(annotated, ["annotation"] * len(rows),
                              f"face counts from dataset annotation: MTCNN is not installed ({err})")
        raise UserError(f"mask.face_counter: mtcnn needs facenet-pytorch ({err}); run `make install` or set "
                        "mask.face_counter: annotation") from None
    return decide_counts(detected, annotated, name)
