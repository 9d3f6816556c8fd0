"""Face Sim / Div with dlib's offline ResNet on the synthetic world's drawn faces; ArcFace's absent path."""

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from cocoins.eval.metrics.base import MetricUnavailable
from cocoins.eval.metrics.faces import ArcFaceEmbedder, DlibFaceEmbedder, face_metrics
from cocoins.eval.scoring import Backends, MetricConfig

dlib_ok, dlib_reason = DlibFaceEmbedder().available()
needs_dlib = pytest.mark.skipif(not dlib_ok, reason=dlib_reason)


@pytest.fixture(scope="module")
def portraits(tiny_world):
    """Single-face images of the tiny world: [(image, identity)]."""
    ids = dict(line.split() for line in (tiny_world / "identity_CelebA.txt").read_text().splitlines())
    faces = dict(line.split() for line in (tiny_world / "face_counts.txt").read_text().splitlines())
    return [(Image.open(tiny_world / "img_align_celeba" / name).convert("RGB"), ident)
            for name, ident in sorted(ids.items()) if faces[name] == "1"]


@pytest.fixture(scope="module")
def embedder():
    return DlibFaceEmbedder()


@needs_dlib
def test_identical_images_give_sim_one(portraits, embedder):
    a, b = portraits[0][0], next(img for img, ident in portraits if ident != portraits[0][1])
    emb = embedder.embed([a, a, a, b, b])
    metrics, reason = face_metrics(emb, ["x", "x", "x", "y", "y"])
    assert reason == "" and metrics["face_detection_rate"] == 1.0 and metrics["faces"] == 5
    assert metrics["face_sim"] == pytest.approx(1.0, abs=1e-9)
    assert 0.0 < metrics["face_div"] < 1.0


@needs_dlib
def test_true_identities_are_more_similar_than_mixed_ones(portraits, embedder):
    ordered = sorted(portraits, key=lambda p: p[1])
    truth = [ident for _, ident in ordered]
    assert truth == ["1", "1", "2", "2", "3", "3", "4", "4"]
    emb = embedder.embed([img for img, _ in ordered])
    assert all(e is not None for e in emb) and emb[0].shape == (128,)
    true_sim = face_metrics(emb, truth)[0]
    # The same group sizes, but each group now holds two different people.
    mixed = ["1", "2", "1", "2", "3", "4", "3", "4"]
    mixed_sim = face_metrics(emb, mixed)[0]
    assert true_sim["face_sim"] > mixed_sim["face_sim"] + 0.02
    assert true_sim["face_div"] > mixed_sim["face_div"]


@needs_dlib
def test_faces_are_aligned_chips_and_blanks_count_as_missed(portraits, embedder):
    chip = embedder.align(portraits[0][0])
    assert chip.shape == (150, 150, 3) and chip.dtype.name == "uint8"
    blank = Image.new("RGB", (64, 64), (128, 128, 128))
    emb = embedder.embed([blank, portraits[0][0], portraits[0][0]])
    assert emb[0] is None
    metrics, reason = face_metrics(emb, ["x", "x", "x"])
    assert metrics["face_detection_rate"] == pytest.approx(2 / 3) and metrics["face_sim"] == pytest.approx(1.0)
    assert metrics["face_div"] is None and "a face was found in 2/3 images" in reason


def test_arcface_absent_gives_reasons(tmp_path):
    ok, reason = ArcFaceEmbedder(None).available()
    assert not ok and "eval.arcface_dir (--arcface-dir) is not set" in reason
    ok, reason = ArcFaceEmbedder(str(tmp_path)).available()
    assert not ok
    if importlib.util.find_spec("insightface") is None:
        assert "insightface package is not installed" in reason
    else:
        assert "holds no insightface .onnx" in reason


def test_absent_face_model_is_null_with_reason_or_an_error_when_strict():
    config = MetricConfig(face_backend="arcface", clip_model=None)
    backends = Backends.load(config)
    assert backends.faces is None and "arcface_dir" in backends.unavailable["face"]
    assert set(backends.unavailable) == {"face", "clip", "dreamsim", "fid", "identity"}
    with pytest.raises(MetricUnavailable, match="face is unavailable.*eval.strict"):
        Backends.load(MetricConfig(face_backend="arcface", strict=True))
    assert "none" in Backends.load(MetricConfig(face_backend="none", clip_model=None)).unavailable["face"]
