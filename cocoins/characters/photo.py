"""A user's photo as the code fitter needs it: one person, square, at the model's size, with a subject mask.

What can check "one person" depends on the size:

- Full scale (1024 px photos of real people): MTCNN counts faces (`cocoins.backends.faces.MtcnnFaceCounter`,
  the mask stage's counter); without a mask file the whole photo is the subject region (the face and hair
  fill a portrait; a tighter mask can be given with --mask, e.g. one Grounded SAM 2 made).
- Mini-world (32 px drawn people): no face detector reads them (MTCNN misses most drawn faces, see the mask
  stage), so the photo comes with its subject mask, as the world's renderer ships one for every image and the
  mask stage's `dataset` backend reads it; the people are the mask's connected regions.

Every problem is one line naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cocoins.runtime import UserError

MAX_PHOTO_BYTES = 40 << 20
MAX_ASPECT = 1.25          # longer side / shorter side; beyond this the centre crop would cut the person off
MIN_PERSON_SHARE = 0.02    # a mask region smaller than this share of the image is a speck, not a person
FACE_DETECTOR_MIN_SIZE = 256   # below this a model draws too few pixels per face for MTCNN (the mini-world's 32)


class PeopleCounter(Protocol):
    name: str

    def count(self, photo: Image.Image, mask: np.ndarray | None) -> int: ...


@dataclass
class MaskRegionCounter:
    """People = connected regions of the subject mask (8-connected, specks ignored): the mini-world's check."""
    name: str = "mask regions"

    def count(self, photo: Image.Image, mask: np.ndarray | None) -> int:
        if mask is None:
            raise UserError("counting people by mask regions needs a subject mask; give --mask MASK.png")
        from scipy import ndimage

        labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())[1:]
        return int(np.sum(sizes >= MIN_PERSON_SHARE * mask.size))


@dataclass
class MtcnnPeopleCounter:
    """Faces found by MTCNN (full-scale photos); the mask, if any, is not used."""
    name: str = "mtcnn"

    def count(self, photo: Image.Image, mask: np.ndarray | None) -> int:
        from cocoins.backends.faces import MtcnnFaceCounter

        counter = MtcnnFaceCounter()
        side = min(photo.size)
        if side < counter.min_side:
            photo = photo.resize((round(photo.width * counter.min_side / side),
                                  round(photo.height * counter.min_side / side)), Image.BICUBIC)
        return counter._count_batch([photo])[0]


def people_counter(has_mask: bool, size: int, what: str = "PHOTO", mask_option: str = "--mask") -> PeopleCounter:
    """Mask regions when a mask comes with the photo; MTCNN's faces otherwise, where the model's size lets a face
    detector read the photo (a one-line error naming the photo `what` and `mask_option` where it does not)."""
    if has_mask:
        return MaskRegionCounter()
    if size < FACE_DETECTOR_MIN_SIZE:
        raise UserError(f"{what}: this model draws {size} px people, too small for a face detector: give "
                        f"{mask_option} MASK.png, the photo's subject mask (white on the person, as the mini-world's "
                        "renderer writes beside each image)")
    return MtcnnPeopleCounter()


@dataclass(frozen=True)
class Photo:
    pixels: torch.Tensor     # [3, S, S] in [-1, 1]
    mask: torch.Tensor       # [S, S] in {0, 1}
    sha256: str              # of the file's bytes as given
    image: Image.Image       # the square crop at the model's size


def _open(data: bytes, what: str, mode: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError):
        raise UserError(f"{what} is not an image PIL can read; give a PNG or JPEG") from None


def _square(im: Image.Image, size: int, what: str, resample) -> Image.Image:
    w, h = im.size
    if min(w, h) < size:
        raise UserError(f"{what} is {w}x{h} px; this model draws {size}x{size}: give a photo at least {size} px on "
                        "its short side (upscaling would invent the face)")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise UserError(f"{what} is {w}x{h} px; crop it to a square around the person (at most "
                        f"{MAX_ASPECT:g}:1) so the centre crop keeps their face")
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side)).resize((size, size), resample)


def read_photo(photo: str | os.PathLike | bytes, size: int, counter: PeopleCounter,
               mask: str | os.PathLike | bytes | None = None, name: str = "PHOTO") -> Photo:
    """The checked photo of one person at `size` px; `photo` and `mask` are paths or the bytes of an upload."""
    def read(src, what):
        if isinstance(src, bytes):
            return src
        path = Path(src)
        if not path.is_file():
            raise UserError(f"{what} {path} not found; give the path of a PNG or JPEG")
        if path.stat().st_size > MAX_PHOTO_BYTES:
            raise UserError(f"{what} {path} is over {MAX_PHOTO_BYTES >> 20} MiB; give a smaller image")
        return path.read_bytes()

    label = name if isinstance(photo, bytes) else f"{name} {photo}"
    data = read(photo, name)
    if len(data) > MAX_PHOTO_BYTES:
        raise UserError(f"{label} is over {MAX_PHOTO_BYTES >> 20} MiB; give a smaller image")
    im = _open(data, label, "RGB")
    mask_arr = None
    if mask is not None:
        mlabel = "mask" if isinstance(mask, bytes) else f"mask {mask}"
        m = _open(read(mask, "mask"), mlabel, "L")
        if m.size != im.size:
            raise UserError(f"{mlabel} is {m.size[0]}x{m.size[1]} px but the photo is {im.size[0]}x{im.size[1]}; "
                            "give the mask made for this photo")
        mask_arr = (np.asarray(m) >= 128).astype(np.uint8)
    people = counter.count(im, mask_arr)
    if people == 0:
        raise UserError(f"{label}: no person found ({counter.name}); give a photo of one person with the face visible")
    if people > 1:
        raise UserError(f"{label}: {people} people found ({counter.name}); a character is one person: crop the photo "
                        "to one of them")
    square = _square(im, size, label, Image.BICUBIC)
    if mask_arr is None:
        m_sq = torch.ones(size, size)
    else:
        m_img = _square(Image.fromarray(mask_arr * 255), size, label, Image.BILINEAR)
        m_sq = torch.from_numpy((np.asarray(m_img) >= 128).astype(np.float32))
        if not m_sq.any():
            raise UserError(f"{label}: the person lies outside the square centre crop; crop the photo around them")
    pixels = torch.from_numpy(np.asarray(square, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    return Photo(pixels, m_sq, hashlib.sha256(data).hexdigest(), square)
