"""Grounded SAM 2 (Sec. 4.2): Grounding DINO boxes for the tagged subject words, SAM 2 masks for the boxes.

- `GroundingDino`: transformers `AutoModelForZeroShotObjectDetection` + `AutoProcessor` (hub id or dir),
  batched; `post_process_grounded_object_detection` with the box threshold (box score) and the text
  threshold (which prompt tokens label a box). A box is kept only if its label shares a word with the
  prompt, so the text threshold decides too, not just the box score. That is `mask.detector_impl:
  transformers`, the default; `groundingdino` runs the original package on the Grounded-SAM-2 checkpoints
  instead (groundingdino_original.py, the same `detect`); `make_detector` picks one.
- `Sam2Boxes`: the `sam2` package's `build_sam2(config, checkpoint)` + `SAM2ImagePredictor`, box prompts,
  `set_image_batch` / `predict_batch`, one mask per box (multimask off); the subject mask is the union
  of its boxes' masks. `checkpoint: random` builds random weights (tests and benchmarks only).
- `GroundedSam2Masker`: subject mask per image from the words tagged as subject 1 in both captions.
- `GroundingFaceCounter`: the number of kept "face" boxes per image after NMS (the paper's face filter).

SAM2ImagePredictor hard-codes its feature sizes for 1024 px inputs; they are set from the model's
image_size here (the same values at 1024), so smaller configs work too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional, Protocol

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cocoins.backends.chat import load_pretrained
from cocoins.backends.detections import Detections
from cocoins.data.tags import TagError, parse_tagged
from cocoins.runtime import UserError

RANDOM = "random"
_WORD = re.compile(r"[a-z]+")
_SPECIAL = re.compile(r"\[[A-Z]+\]")   # [SEP], [CLS], ... in decoded labels


def subject_phrases(tagged1: str, tagged2: str, index: int = 1) -> list[str]:
    """Distinct lower-case words tagged as subject `index` in either caption ("man", "young woman", ...)."""
    phrases: list[str] = []
    for tagged in (tagged1, tagged2):
        try:
            spans = parse_tagged(tagged).spans
        except TagError:
            continue
        for span in spans:
            text = " ".join(span.text.lower().split())
            if span.index == index and text not in phrases:
                phrases.append(text)
    return phrases


def detection_prompt(phrases: list[str]) -> str:
    """Grounding DINO's text format: lower-case phrases, each ended by a dot."""
    return " ".join(f"{p.rstrip('.')}." for p in phrases)


def matching(det: Detections, phrases: list[str]) -> Detections:
    """Only boxes whose label (tokens over the text threshold) names a word of the prompt."""
    words = {w for p in phrases for w in _WORD.findall(p.lower())}
    keep = [k for k, label in enumerate(det.labels) if words & set(_WORD.findall(_SPECIAL.sub(" ", label).lower()))]
    return Detections(det.boxes[keep].reshape(-1, 4), det.scores[keep], [det.labels[k] for k in keep])


class Detector(Protocol):
    def detect(self, images: list[Image.Image], prompts: list[str], box_threshold: float,
               text_threshold: float) -> list[Detections]: ...

    def describe(self) -> str: ...


@dataclass
class GroundingDino:
    model: str
    device: torch.device
    dtype: str = "fp32"
    _loaded: tuple = field(default=(), repr=False)

    def describe(self) -> str:
        return f"transformers ({self.model})"

    def _load(self):
        if not self._loaded:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

            self._loaded = load_pretrained(AutoModelForZeroShotObjectDetection, AutoProcessor, self.model,
                                           self.device, self.dtype, "mask.detector")
        return self._loaded

    @torch.no_grad()
    def detect(self, images: list[Image.Image], prompts: list[str], box_threshold: float,
               text_threshold: float) -> list[Detections]:
        processor, net = self._load()
        inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True).to(net.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(net.dtype)
        outputs = net(**inputs)
        results = processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
            target_sizes=[(im.height, im.width) for im in images])
        return [Detections(r["boxes"].float().cpu().numpy().reshape(-1, 4), r["scores"].float().cpu().numpy(),
                           list(r["text_labels"])) for r in results]


def make_detector(p, device) -> Detector:
    """The Grounding DINO of the `mask` params group (`MaskParams.detector_impl`)."""
    if p.detector_impl == "transformers":
        return GroundingDino(p.detector, device, p.dtype)
    if p.detector_impl == "groundingdino":
        from cocoins.backends.groundingdino_original import OriginalGroundingDino

        if p.dtype != "fp32":   # the package's inference is fp32; its transformer builds fp32 tensors inside
            raise UserError(f"mask.dtype: {p.dtype} with mask.detector_impl: groundingdino; the original package "
                            "runs in fp32, set mask.dtype: fp32")
        return OriginalGroundingDino(p.groundingdino_config, p.groundingdino_checkpoint, p.groundingdino_text_encoder,
                                     device, p.groundingdino_min_size, p.groundingdino_max_size)
    raise UserError(f"unknown mask.detector_impl {p.detector_impl!r}; use transformers or groundingdino")


@dataclass
class Sam2Boxes:
    config: str
    checkpoint: str
    device: torch.device
    overrides: tuple[str, ...] = ()
    _predictor: object = field(default=None, repr=False)

    def predictor(self):
        if self._predictor is None:
            try:
                from sam2.build_sam import build_sam2
                from sam2.sam2_image_predictor import SAM2ImagePredictor
            except ImportError as err:
                raise UserError(f"mask.backend: grounded_sam2 needs the sam2 package ({err}); install it with "
                                "`SAM2_BUILD_CUDA=0 pip install sam2==1.1.0`") from None
            ckpt = None if self.checkpoint == RANDOM else self.checkpoint
            if ckpt is not None and not os.path.isfile(ckpt):
                raise UserError(f"SAM 2 checkpoint {ckpt} not found; download it (e.g. sam2.1_hiera_large.pt) "
                                "and set mask.sam2_checkpoint")
            model = build_sam2(self.config, ckpt, device=str(self.device), hydra_overrides_extra=list(self.overrides))
            predictor = SAM2ImagePredictor(model)
            s = model.image_size
            predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
            self._predictor = predictor
        return self._predictor

    @torch.no_grad()
    def union_masks(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """Per image (H, W, 3 uint8) the union of its boxes' masks (bool H x W); no boxes: all False."""
        out = [np.zeros(im.shape[:2], dtype=bool) for im in images]
        todo = [k for k, b in enumerate(boxes) if len(b)]
        if not todo:
            return out
        predictor = self.predictor()
        predictor.set_image_batch([images[k] for k in todo])
        masks, _, _ = predictor.predict_batch(box_batch=[boxes[k].astype(np.float32) for k in todo],
                                              multimask_output=False)
        for k, m in zip(todo, masks):
            out[k] = (np.asarray(m).reshape(-1, *images[k].shape[:2]) > 0).any(axis=0)
        return out


@dataclass
class GroundedSam2Masker:
    detector: Detector
    sam: Sam2Boxes
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    name: str = "grounded_sam2"

    batch_size: int = 8

    def mask_rows(self, rows: pd.DataFrame) -> list[tuple[Optional[np.ndarray], str]]:
        """Per images-table row (path, tagged1, tagged2): its subject mask or the reason there is none."""
        out: list[tuple[Optional[np.ndarray], str]] = []
        for start in range(0, len(rows), self.batch_size):
            batch = rows.iloc[start:start + self.batch_size]
            images, phrases, keys, results = [], [], [], [(None, "")] * len(batch)
            for k, (path, t1, t2) in enumerate(zip(batch["path"], batch["tagged1"], batch["tagged2"])):
                try:
                    with Image.open(path) as im:
                        images.append(im.convert("RGB"))
                    phrases.append(subject_phrases(t1, t2))
                    keys.append(k)
                except (OSError, ValueError) as err:
                    results[k] = (None, f"unreadable image ({type(err).__name__})")
            for k, result in zip(keys, self.mask_batch(images, phrases)):
                results[k] = result
            out += results
        return out

    def mask_batch(self, images: list[Image.Image], phrases: list[list[str]]) -> list[tuple[Optional[np.ndarray], str]]:
        """(uint8 0/255 mask, "") or (None, reason) per image; `phrases`: the subject words per image."""
        out: list[tuple[Optional[np.ndarray], str]] = [(None, "no tagged subject")] * len(images)
        todo = [k for k, p in enumerate(phrases) if p]
        if not todo:
            return out
        dets = self.detector.detect([images[k] for k in todo], [detection_prompt(phrases[k]) for k in todo],
                                    self.box_threshold, self.text_threshold)
        # Duplicate boxes of one subject draw the same mask: SAM 2 decodes each object once.
        boxes = [distinct_boxes(matching(d, phrases[k])).boxes for k, d in zip(todo, dets)]
        arrays = [np.array(images[k].convert("RGB")) for k in todo]   # writable: SAM 2 wraps it in a tensor
        for k, b, m in zip(todo, boxes, self.sam.union_masks(arrays, boxes)):
            if not len(b):
                out[k] = (None, "no subject box (Grounding DINO)")
            elif not m.any():
                out[k] = (None, "empty mask")
            else:
                out[k] = (np.where(m, 255, 0).astype(np.uint8), "")
        return out


# Grounding DINO's queries are not deduplicated (DETR-style models have no NMS of their own), and for a face it
# often returns the face and a slightly larger face-and-hair box; counted as they come, one face is two, and a
# single-person image is dropped as a group photo. Boxes overlapping more than this (IoU) are one object: 0.5 is
# the usual detection threshold, and two real faces next to each other overlap far less (side by side: 0). The
# subject boxes get the same treatment: SAM 2 decodes each object once, not once per duplicate query.
BOX_NMS_IOU = 0.5


def distinct_boxes(det: Detections, iou: float = BOX_NMS_IOU) -> Detections:
    """`det` after non-maximum suppression by score: one box per object, highest score first."""
    if not len(det.boxes):
        return det
    from torchvision.ops import nms

    keep = nms(torch.as_tensor(det.boxes, dtype=torch.float32), torch.as_tensor(det.scores, dtype=torch.float32),
               iou).tolist()
    return Detections(det.boxes[keep].reshape(-1, 4), det.scores[keep], [det.labels[k] for k in keep])


def distinct_faces(det: Detections, iou: float = BOX_NMS_IOU) -> int:
    """How many faces `det`'s face boxes show: non-maximum suppression by score, then count."""
    return len(distinct_boxes(det, iou).boxes)


@dataclass
class GroundingFaceCounter:
    """Faces = Grounding DINO boxes for "face" over `threshold` (labelled "face" by the text threshold), one per
    face after non-maximum suppression (BOX_NMS_IOU)."""
    detector: Detector
    threshold: float = 0.35
    text_threshold: float = 0.25
    batch_size: int = 8
    name: str = "grounding"

    def count_images(self, images: list[Image.Image]) -> list[int]:
        counts = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            dets = self.detector.detect(batch, ["face."] * len(batch), self.threshold, self.text_threshold)
            counts += [distinct_faces(matching(d, ["face"])) for d in dets]
        return counts

    def count(self, rows: pd.DataFrame) -> list[int]:
        """Face count per images-table row (reads `path`); -1 where the image cannot be read."""
        images, keys = [], []
        for k, path in enumerate(rows["path"]):
            try:
                with Image.open(path) as im:
                    images.append(im.convert("RGB"))
                keys.append(k)
            except (OSError, ValueError):
                pass
        counts = [-1] * len(rows)
        for k, n in zip(keys, self.count_images(images)):
            counts[k] = n
        return counts
