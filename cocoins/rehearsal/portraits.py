"""A few CelebAMask-HQ-format portraits for the rehearsal, drawn by the synthetic world's renderer at 1024 px.

Layout (what cocoins/data/celeba_hq.py reads): `CelebA-HQ-img/<idx>.jpg` (1024 x 1024, one face each),
`CelebAMask-HQ-mask-anno/<idx // 2000>/<idx:05d>_<part>.png` (512 x 512, white = part),
`CelebAMask-HQ-attribute-anno.txt` (list_attr_celeba.txt format, the drawn traits' attributes),
`CelebA-HQ-to-CelebA-mapping.txt`, and CelebA's `identity_CelebA.txt` for the mapped files (two portraits per
identity, so identity-keyed code sees repeats).

Part masks: the renderer knows the person's silhouette exactly but draws no part labels, so the silhouette is
split into "hair", "cloth" and "skin" by the nearest of the identity's hair colour, the clothes colour (read
off the silhouette's bottom rows, where only the shoulders are) and its skin colour. The split is approximate
(face shading can read as hair); their union, what the pipeline uses, is the exact silhouette.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cocoins.data.celeba_hq import ATTR_FILE, IMAGES_PER_FOLDER, IMG_DIR, MAPPING_FILE, MASK_DIR
from cocoins.rehearsal.models import atomic_dir
from cocoins.world.people import (CELEBA_ATTRIBUTES, HAIR, SCENES, SKIN, ImageSpec, WorldConfig, attributes_of,
                                  draw_traits, encode_jpeg, render)

IMAGE_SIZE = 1024
MASK_SIZE = 512
IMAGES_PER_IDENTITY = 2


def split_parts(image: np.ndarray, silhouette: np.ndarray, skin: tuple, hair: tuple) -> dict[str, np.ndarray]:
    """{part: bool mask} covering `silhouette` (bool H x W) exactly, by nearest reference colour per pixel."""
    bottom = silhouette[-max(1, silhouette.shape[0] // 50):]
    rows = image[-len(bottom):][bottom]
    cloth = np.median(rows, axis=0) if len(rows) else np.array(hair, dtype=float)
    refs = {"skin": np.array(skin, float), "hair": np.array(hair, float), "cloth": cloth}
    distance = np.stack([np.linalg.norm(image.astype(float) - ref, axis=-1) for ref in refs.values()])
    nearest = distance.argmin(axis=0)
    return {part: silhouette & (nearest == k) for k, part in enumerate(refs)}


def _mask_png(mask: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").resize((size, size),
                                                                                    Image.Resampling.NEAREST)


def write_celeba_hq(root: str | Path, n: int, seed: int = 0) -> Path:
    """Write `n` portraits (ids 0..n-1) in the CelebAMask-HQ layout under `root` (replaced); same seed, same bytes."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    root = Path(root)
    identities = (n + IMAGES_PER_IDENTITY - 1) // IMAGES_PER_IDENTITY
    cfg = WorldConfig(seed=seed, identities=identities, images_per_identity=IMAGES_PER_IDENTITY,
                      two_person_images=0, image_size=IMAGE_SIZE)
    traits = {i: draw_traits(seed, i) for i in range(1, identities + 1)}
    scenes = list(SCENES)
    attr_lines, mapping_lines, identity_lines = [str(n), " ".join(CELEBA_ATTRIBUTES)], ["idx orig_idx orig_file"], []
    with atomic_dir(root) as tmp:
        (tmp / IMG_DIR).mkdir()
        for idx in tqdm(range(n), desc="drawing CelebA-HQ portraits", unit="img"):
            identity = idx // IMAGES_PER_IDENTITY + 1
            t = traits[identity]
            spec = ImageSpec(str(idx), (identity,), scenes[(seed + idx) % len(scenes)], idx)
            image, silhouette = render(spec, traits, cfg)
            (tmp / IMG_DIR / f"{idx}.jpg").write_bytes(encode_jpeg(image))
            folder = tmp / MASK_DIR / str(idx // IMAGES_PER_FOLDER)
            folder.mkdir(parents=True, exist_ok=True)
            parts = split_parts(np.asarray(image), np.asarray(silhouette) >= 128, SKIN[t.skin], HAIR[t.hair_color])
            for part, mask in parts.items():
                if mask.any():
                    _mask_png(mask, MASK_SIZE).save(folder / f"{idx:05d}_{part}.png")
            attrs = attributes_of(t)
            attr_lines.append(f"{idx}.jpg " + " ".join(str(attrs[a]) for a in CELEBA_ATTRIBUTES))
            original = f"{idx + 1:06d}.jpg"
            mapping_lines.append(f"{idx} {idx} {original}")
            identity_lines.append(f"{original} {identity}")
        for name, lines in ((ATTR_FILE, attr_lines), (MAPPING_FILE, mapping_lines),
                            ("identity_CelebA.txt", identity_lines)):
            (tmp / name).write_text("".join(line + "\n" for line in lines))
    return root
