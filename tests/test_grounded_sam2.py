"""Grounded SAM 2 masks and Grounding DINO face counts: tiny random models through the real code and stage."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cocoins.backends.detections import Detections
from cocoins.backends.grounded_sam2 import (GroundedSam2Masker, GroundingDino, GroundingFaceCounter, Sam2Boxes,
                                            detection_prompt, distinct_faces, matching, subject_phrases)
from cocoins.backends.tiny import SAM2_CONFIG, SAM2_TINY_OVERRIDES, build_tiny_grounding_dino

from test_data_stages import run, write_params

CPU = torch.device("cpu")
# sam2 is installed with `SAM2_BUILD_CUDA=0 pip install sam2==1.1.0` (pure Python; see the lead's pins).
needs_sam2 = pytest.mark.skipif(importlib.util.find_spec("sam2") is None,
                                reason="sam2 not installed: SAM2_BUILD_CUDA=0 pip install sam2==1.1.0")


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    return build_tiny_grounding_dino(tmp_path_factory.mktemp("gdino") / "gdino")


@pytest.fixture(scope="module")
def tiny_sam():
    return Sam2Boxes(SAM2_CONFIG, "random", CPU, SAM2_TINY_OVERRIDES)


def test_prompt_from_tagged_subject_words():
    t1 = "A photo of a young <subj1>Man</subj1> with a <subj2>child</subj2>."
    t2 = "The <subj1>person</subj1> smiles; the <subj1>man</subj1> waves."
    assert subject_phrases(t1, t2) == ["man", "person"]
    assert subject_phrases(t1, t2, index=2) == ["child"]
    assert subject_phrases("no tags", "<subj1>broken") == []
    assert detection_prompt(["man", "young woman"]) == "man. young woman."


def test_boxes_must_be_labelled_with_a_prompt_word():
    det = Detections(np.arange(12, dtype=np.float32).reshape(3, 4), np.array([0.9, 0.8, 0.7]),
                     ["man. [SEP]", "[SEP]", "face man"])
    kept = matching(det, ["man"])
    assert kept.labels == ["man. [SEP]", "face man"] and kept.boxes.tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert len(matching(det, ["woman"]).boxes) == 0


def test_union_of_box_masks(tiny_sam, monkeypatch):
    """The subject mask is the union of the masks SAM 2 returns for each box; no boxes: no SAM call."""
    images = [np.zeros((20, 30, 3), np.uint8), np.zeros((10, 10, 3), np.uint8)]
    boxes = [np.array([[0, 0, 5, 5], [10, 10, 20, 15]], np.float32), np.zeros((0, 4), np.float32)]

    class Predictor:
        def set_image_batch(self, ims):
            assert len(ims) == 1   # only images with boxes are embedded

        def predict_batch(self, box_batch, multimask_output):
            assert not multimask_output
            out = np.zeros((len(box_batch[0]), 1, 20, 30), np.float32)
            for k, (x0, y0, x1, y1) in enumerate(box_batch[0].astype(int)):
                out[k, 0, y0:y1, x0:x1] = 1
            return [out], None, None

    monkeypatch.setattr(tiny_sam, "_predictor", Predictor())
    union, empty = tiny_sam.union_masks(images, boxes)
    assert union.sum() == 25 + 50 and union[:5, :5].all() and union[10:15, 10:20].all()
    assert empty.shape == (10, 10) and not empty.any()


@needs_sam2
def test_real_tiny_models_wiring_and_thresholds(tiny_dino, tiny_sam, tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k, size in enumerate([(48, 40), (64, 64)]):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(paths[-1])
    (tmp_path / "bad.jpg").write_bytes(b"")
    rows = pd.DataFrame({"path": paths + [str(tmp_path / "bad.jpg"), paths[0]],
                         "tagged1": ["a <subj1>man</subj1>"] * 3 + ["a dog"], "tagged2": ["the man"] * 4})
    detector = GroundingDino(str(tiny_dino), CPU)
    dets = detector.detect([Image.open(p).convert("RGB") for p in paths], ["man.", "face."], 0.0, 0.0)
    assert [d.boxes.shape for d in dets] == [(30, 4), (30, 4)]   # threshold 0: every query
    assert (dets[0].boxes[:, 2] <= 40 + 1e-3).all() and (dets[0].boxes[:, 3] <= 48 + 1e-3).all()  # pixels
    loose = GroundedSam2Masker(detector, tiny_sam, box_threshold=0.0, text_threshold=0.0, batch_size=2)
    out = loose.mask_rows(rows)
    assert [r for _, r in out][2:] == ["unreadable image (UnidentifiedImageError)", "no tagged subject"]
    for mask, reason in out[:2]:
        assert reason in ("", "empty mask")
        if mask is not None:
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert out[0][0] is None or out[0][0].shape == (48, 40)
    strict = GroundedSam2Masker(detector, tiny_sam, box_threshold=1.0, text_threshold=0.0)
    assert [r for _, r in strict.mask_rows(rows.iloc[:2])] == ["no subject box (Grounding DINO)"] * 2
    faces = GroundingFaceCounter(detector, threshold=0.0, text_threshold=0.0, batch_size=2)
    counts = faces.count(rows.iloc[:3])
    # threshold 0: all 30 queries are "face" boxes, counted after NMS.
    face_dets = detector.detect([Image.open(p).convert("RGB") for p in paths], ["face."] * 2, 0.0, 0.0)
    assert counts[2] == -1 and counts[:2] == [distinct_faces(matching(d, ["face"])) for d in face_dets]
    assert all(1 <= n <= 30 for n in counts[:2])
    assert GroundingFaceCounter(detector, threshold=1.0).count(rows.iloc[:1]) == [0]


class FixedDetections:
    """A detector that returns the given detections for every image."""
    def __init__(self, det):
        self.det = det

    def detect(self, images, prompts, box_threshold, text_threshold):
        return [self.det] * len(images)


def test_overlapping_face_boxes_count_one_face():
    """Grounding DINO's duplicate queries on one face (the face, the face with hair) count once (NMS, IoU 0.5)."""
    face, face_and_hair = [100, 100, 200, 220], [95, 80, 205, 225]         # IoU 0.75
    neighbour = [260, 100, 360, 220]                                       # side by side: IoU 0
    counter = GroundingFaceCounter(FixedDetections(Detections(
        np.array([face, face_and_hair], np.float32), np.array([0.9, 0.6]), ["face", "face"])))
    assert counter.count_images([Image.new("RGB", (400, 300))]) == [1]
    two = Detections(np.array([face, face_and_hair, neighbour], np.float32), np.array([0.9, 0.6, 0.8]), ["face"] * 3)
    assert GroundingFaceCounter(FixedDetections(two)).count_images([Image.new("RGB", (400, 300))]) == [2]
    assert distinct_faces(Detections(np.zeros((0, 4), np.float32), np.zeros(0), [])) == 0
    # Just above and below the threshold: boxes sharing half their area are two faces, more than half one.
    half = Detections(np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32), np.array([0.9, 0.8]), ["face"] * 2)
    assert distinct_faces(half) == 2 and distinct_faces(half, iou=0.49) == 1


def test_duplicate_subject_boxes_reach_sam2_once(monkeypatch):
    """The subject's duplicate queries (IoU 0.75) go to SAM 2 as one box, the higher-scoring one."""
    subject, subject_and_hair = [100, 100, 200, 220], [95, 80, 205, 225]
    seen = []

    class Sam:
        def union_masks(self, images, boxes):
            seen.extend(b.tolist() for b in boxes)
            return [np.ones(im.shape[:2], bool) for im in images]

    detector = FixedDetections(Detections(np.array([subject_and_hair, subject], np.float32), np.array([0.6, 0.9]),
                                          ["man", "man"]))
    [(mask, reason)] = GroundedSam2Masker(detector, Sam()).mask_batch([Image.new("RGB", (400, 300))], [["man"]])
    assert seen == [[subject]] and reason == "" and mask.max() == 255


def fake_detect(self, images, prompts, box_threshold, text_threshold):
    """Known boxes: the subject prompt gets the central box; "face." gets one face box per drawn face."""
    out = []
    for im, prompt in zip(images, prompts):
        w, h = im.size
        if prompt == "face.":
            n = 2 if im.getpixel((2, 2)) == (1, 2, 3) else 1   # two-person images are marked below
            boxes = [[w * .05, h * .2, w * .45, h * .6], [w * .55, h * .2, w * .95, h * .6]][:n]   # side by side
            out.append(Detections(np.array(boxes, np.float32), np.full(n, 0.9), ["face"] * n))
        else:
            out.append(Detections(np.array([[w * .2, h * .1, w * .8, h * .95]], np.float32), np.array([0.8]),
                                  [prompt.split(".")[0]]))
    return out


@needs_sam2
def test_mask_stage_with_grounded_sam2_and_grounding_faces(tiny_dino, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, mask={"backend": "grounded_sam2", "face_counter": "grounding", "detector": str(tiny_dino),
                                 "sam2_config": SAM2_CONFIG, "sam2_checkpoint": "random",
                                 "sam2_overrides": list(SAM2_TINY_OVERRIDES), "device": "cpu", "batch_size": 4,
                                 "chunk_size": 4})
    for name in ("ingest", "caption", "tag"):
        run(name)
    images = pd.read_parquet("data/images.parquet")
    for path in images.loc[images["faces_annotated"] == 2, "path"]:   # mark the two-person images
        im = Image.open(path).convert("RGB")
        im.putpixel((2, 2), (1, 2, 3))
        im.save(path, format="PNG")   # lossless, so the mark survives (PIL reads the content, not the suffix)
    monkeypatch.setattr(GroundingDino, "detect", fake_detect)
    calls = []
    real_union = Sam2Boxes.union_masks
    monkeypatch.setattr(Sam2Boxes, "union_masks", lambda self, ims, boxes: calls.append(len(ims)) or
                        real_union(self, ims, boxes))
    run("mask")
    s = pd.read_parquet("data/subjects.parquet").set_index("image_id")
    assert len(s) == 10 and calls == [4, 4, 2]   # SAM 2 batched per mask.batch_size, chunks of 4
    two = images.loc[images["faces_annotated"] == 2, "image_id"]
    for image_id, row in s.iterrows():
        if row["reason"] == "empty mask":         # random SAM 2 weights may segment nothing
            continue
        assert row["face_counter"] == "grounding"
        assert row["face_count"] == (2 if image_id in set(two) else 1)
        assert row["reason"] == ("2 faces (max 1)" if image_id in set(two) else "")
    kept = s[s["kept"]]
    assert len(kept) >= 1 and (kept["mask_fraction"] > 0).all()
    out = capsys.readouterr().out
    assert "[mask] mask backend: grounded_sam2" in out and 'Grounding DINO boxes for "face"' in out
