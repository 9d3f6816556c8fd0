"""A deterministic synthetic world in CelebA's on-disk format: drawn portraits of a few dozen identities.

Why: the pipeline must run end to end without downloading CelebA. Each identity is a fixed set of drawn
traits (sex, skin, hair colour and style, eye colour, glasses, beard, smile, age, face shape); each image
of it varies only the scene (background) and a small pose jitter. Because the generator knows what it
drew, the CelebA attributes, identities, subject masks and face counts it writes are exact ground truth.

Portraits are drawn at 4x and downsampled (anti-aliasing), then JPEG-encoded with fixed settings, so the
same seed gives the same bytes. Rows of the RNG are keyed by (seed, purpose, index), so one identity's
traits do not change when the number of identities or images changes.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

# CelebA's 40 attributes, in the column order of list_attr_celeba.txt.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

SKIN = {"pale": (246, 222, 206), "fair": (236, 196, 168), "olive": (210, 166, 122),
        "tan": (180, 128, 92), "brown": (134, 90, 62), "dark": (92, 60, 42)}
HAIR = {"black": (28, 24, 24), "blond": (226, 196, 120), "brown": (108, 70, 40), "gray": (168, 168, 172)}
EYES = {"brown": (96, 58, 30), "blue": (60, 110, 190), "green": (70, 130, 80), "gray": (120, 130, 140)}
HAIR_STYLES = ("bald", "short", "long", "bangs", "wavy")
# Per-image scenes: (wall colour, accent colour). The scene varies per image, never per identity.
SCENES = {"studio gray": ((128, 128, 132), (150, 150, 156)), "sky blue": ((120, 170, 220), (200, 225, 245)),
          "park green": ((96, 150, 90), (160, 200, 120)), "sunset orange": ((230, 140, 80), (250, 200, 120)),
          "office beige": ((210, 200, 180), (240, 235, 220)), "night navy": ((30, 40, 80), (230, 220, 140)),
          "brick red": ((150, 60, 50), (190, 110, 90)), "stage purple": ((90, 60, 130), (200, 160, 230))}
# Each scene in words: what the mini base model's captions and the mini-world's Scenes prompts say.
SCENE_PHRASES = {
    "studio gray": "in a gray studio", "sky blue": "under a blue sky", "park green": "in a green park",
    "sunset orange": "at an orange sunset", "office beige": "in a beige office", "night navy": "at night",
    "brick red": "by a red brick wall", "stage purple": "on a purple stage",
}
CLOTHES = ((40, 60, 120), (150, 30, 40), (30, 100, 60), (230, 230, 225), (35, 35, 40), (200, 150, 40))
SUPERSAMPLE = 4
JPEG_QUALITY = 95


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    identities: int = 24
    images_per_identity: int = 4
    two_person_images: int = 4
    image_size: int = 64


@dataclass(frozen=True)
class Traits:
    """What is drawn for one identity; the same on every image of it."""
    male: bool
    young: bool
    skin: str
    hair_color: str
    hair_style: str
    eye_color: str
    eyeglasses: bool
    beard: bool
    mustache: bool
    smiling: bool
    lipstick: bool
    face_width: float    # face oval half-width factor, identity-specific face shape
    face_length: float   # face oval half-height factor
    eye_spacing: float


@dataclass(frozen=True)
class ImageSpec:
    image_id: str
    identities: tuple[int, ...]   # one (portrait) or two (side by side); the first is the labelled one
    scene: str
    index: int                    # position in the shuffled image list, keys the per-image RNG


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def draw_traits(seed: int, identity: int) -> Traits:
    """Sample one identity's traits (independent of how many identities the world has)."""
    r = _rng(seed, 1, identity)
    male = bool(r.random() < 0.5)
    young = bool(r.random() < 0.65)
    style_p = [0.15, 0.5, 0.1, 0.1, 0.15] if male else [0.0, 0.15, 0.4, 0.2, 0.25]
    color_p = [0.4, 0.25, 0.35, 0.0] if young else [0.2, 0.05, 0.15, 0.6]
    return Traits(
        male=male, young=young,
        skin=str(r.choice(list(SKIN))),
        hair_color=str(r.choice(list(HAIR), p=color_p)),
        hair_style=str(r.choice(HAIR_STYLES, p=style_p)),
        eye_color=str(r.choice(list(EYES))),
        eyeglasses=bool(r.random() < 0.3),
        beard=bool(male and r.random() < 0.35),
        mustache=bool(male and r.random() < 0.3),
        smiling=bool(r.random() < 0.5),
        lipstick=bool(not male and r.random() < 0.4),
        face_width=round(float(r.uniform(0.9, 1.1)), 3),
        face_length=round(float(r.uniform(0.92, 1.08)), 3),
        eye_spacing=round(float(r.uniform(0.9, 1.1)), 3),
    )


def attributes_of(t: Traits) -> dict[str, int]:
    """CelebA attributes (1/-1) true to what is drawn; attributes the renderer never draws are -1."""
    hair = t.hair_style != "bald"
    on = {
        "Male": t.male, "Young": t.young, "Pale_Skin": t.skin == "pale", "Bald": not hair,
        "Bangs": t.hair_style == "bangs", "Wavy_Hair": t.hair_style == "wavy",
        "Straight_Hair": t.hair_style == "long", "Black_Hair": hair and t.hair_color == "black",
        "Blond_Hair": hair and t.hair_color == "blond", "Brown_Hair": hair and t.hair_color == "brown",
        "Gray_Hair": hair and t.hair_color == "gray", "Eyeglasses": t.eyeglasses, "No_Beard": not t.beard,
        "Mustache": t.mustache, "Smiling": t.smiling,
        "Mouth_Slightly_Open": t.smiling,  # the smile is drawn open, showing teeth
        "Wearing_Lipstick": t.lipstick,
    }
    return {name: 1 if on.get(name, False) else -1 for name in CELEBA_ATTRIBUTES}


def plan_images(cfg: WorldConfig) -> list[ImageSpec]:
    """All images of the world in file order; shuffled so that `limit` still sees many identities."""
    r = _rng(cfg.seed, 0)
    people: list[tuple[int, ...]] = [(i,) for i in range(1, cfg.identities + 1)
                                     for _ in range(cfg.images_per_identity)]
    for k in range(cfg.two_person_images):
        first = k % cfg.identities + 1
        second = (first + int(r.integers(1, max(cfg.identities, 2)))) % cfg.identities + 1
        people.append((first, second) if cfg.identities > 1 else (first, first))
    order = r.permutation(len(people))
    scenes = list(SCENES)
    return [ImageSpec(f"{n + 1:06d}", people[j], scenes[int(r.integers(len(scenes)))], n)
            for n, j in enumerate(order)]


def _darker(c: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(v * f) for v in c)


def _draw_person(rgb: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, t: Traits, cx: float, cy: float,
                 a: float, b: float, clothes: tuple[int, int, int]) -> None:
    """One person, face centre (cx, cy), face half-axes (a, b). Silhouette parts also go into `mask`."""
    skin, hair = SKIN[t.skin], HAIR[t.hair_color]

    def shape(kind: str, box, fill, **kw) -> None:  # draw a silhouette part on the image and the mask
        getattr(rgb, kind)(box, fill=fill, **kw)
        getattr(mask, kind)(box, fill=255, **kw)

    shape("ellipse", [cx - 2.3 * a, cy + 1.45 * b, cx + 2.3 * a, cy + 3.9 * b], clothes)   # shoulders
    shape("rectangle", [cx - 0.42 * a, cy + 0.6 * b, cx + 0.42 * a, cy + 1.7 * b], _darker(skin, 0.9))
    if t.hair_style in ("long", "wavy"):
        shape("rounded_rectangle", [cx - 1.22 * a, cy - 1.14 * b, cx + 1.22 * a, cy + 1.35 * b], hair,
              radius=a * 0.8)
        if t.hair_style == "wavy":  # curls along both sides
            for k in range(6):
                y = cy - 0.6 * b + k * 0.38 * b
                for x in (cx - 1.22 * a, cx + 1.22 * a):
                    shape("ellipse", [x - 0.2 * a, y - 0.2 * a, x + 0.2 * a, y + 0.2 * a], hair)
    elif t.hair_style == "bangs":
        shape("rounded_rectangle", [cx - 1.18 * a, cy - 1.14 * b, cx + 1.18 * a, cy + 0.55 * b], hair,
              radius=a * 0.7)
    else:  # ears show when hair does not cover them
        for s in (-1, 1):
            shape("ellipse", [cx + s * a - 0.16 * a, cy - 0.2 * b, cx + s * a + 0.16 * a, cy + 0.18 * b], skin)
    if t.hair_style == "short":
        shape("ellipse", [cx - 1.07 * a, cy - 1.12 * b, cx + 1.07 * a, cy + 0.2 * b], hair)
    shape("ellipse", [cx - a, cy - b, cx + a, cy + b], skin)                                # face
    # Top hair / fringe: the upper half of an ellipse box, whose centre line is the hairline.
    hairline = {"short": -0.42, "long": -0.45, "wavy": -0.45, "bangs": -0.34}.get(t.hair_style)
    if hairline is not None:
        top = cy - 1.12 * b
        shape("chord", [cx - 1.04 * a, top, cx + 1.04 * a, 2 * (cy + hairline * b) - top], hair,
              start=180, end=360)
    # Interior features: image only.
    brow = HAIR["brown"] if t.hair_color == "blond" else _darker(hair, 0.85)
    ex, ey = 0.4 * a * t.eye_spacing, cy - 0.1 * b
    for s in (-1, 1):
        x = cx + s * ex
        # Eye socket shadow, lash line and a large dark iris: at low resolution a detector sees eyes as
        # dark blobs, the way real photos render them; a bright eye white alone reads as no eye at all.
        rgb.ellipse([x - 0.3 * a, ey - 0.16 * b, x + 0.3 * a, ey + 0.13 * b], fill=_darker(skin, 0.72))
        rgb.line([x - 0.24 * a, cy - 0.28 * b, x + 0.24 * a, cy - 0.31 * b], fill=brow, width=max(1, int(0.1 * a)))
        rgb.ellipse([x - 0.21 * a, ey - 0.09 * b, x + 0.21 * a, ey + 0.09 * b], fill=(235, 235, 230))
        rgb.ellipse([x - 0.1 * b, ey - 0.1 * b, x + 0.1 * b, ey + 0.08 * b], fill=_darker(EYES[t.eye_color], 0.7))
        rgb.ellipse([x - 0.05 * b, ey - 0.05 * b, x + 0.05 * b, ey + 0.04 * b], fill=(8, 8, 8))
        rgb.arc([x - 0.22 * a, ey - 0.1 * b, x + 0.22 * a, ey + 0.1 * b], start=190, end=350, fill=(20, 14, 12),
                width=max(1, int(0.05 * a)))
        if not t.young:  # crow's feet and smile lines
            rgb.line([x + s * 0.3 * a, ey - 0.04 * b, x + s * 0.4 * a, ey + 0.05 * b],
                     fill=_darker(skin, 0.72), width=max(1, int(0.03 * a)))
            rgb.line([cx + s * 0.26 * a, cy + 0.18 * b, cx + s * 0.42 * a, cy + 0.55 * b],
                     fill=_darker(skin, 0.78), width=max(1, int(0.03 * a)))
    rgb.polygon([(cx, cy - 0.02 * b), (cx - 0.12 * a, cy + 0.27 * b), (cx + 0.12 * a, cy + 0.27 * b)],
                fill=_darker(skin, 0.82))
    for s in (-1, 1):  # nostrils
        rgb.ellipse([cx + s * 0.06 * a - 0.04 * a, cy + 0.23 * b, cx + s * 0.06 * a + 0.04 * a, cy + 0.27 * b],
                    fill=_darker(skin, 0.5))
    if t.beard:  # covers the jaw below the line through the face ellipse at 26 and 154 degrees
        rgb.chord([cx - a, cy - b, cx + a, cy + b], start=26, end=154, fill=hair)
    lips = (196, 24, 48) if t.lipstick else _darker((176, 84, 84), 0.95 if t.skin in ("pale", "fair") else 0.65)
    if t.smiling:
        rgb.chord([cx - 0.38 * a, cy + 0.38 * b, cx + 0.38 * a, cy + 0.7 * b], start=0, end=180, fill=lips)
        rgb.chord([cx - 0.3 * a, cy + 0.44 * b, cx + 0.3 * a, cy + 0.64 * b], start=0, end=180, fill=(60, 20, 24))
        rgb.rectangle([cx - 0.28 * a, cy + 0.54 * b, cx + 0.28 * a, cy + 0.58 * b], fill=(245, 245, 240))
    else:
        rgb.ellipse([cx - 0.3 * a, cy + 0.5 * b, cx + 0.3 * a, cy + 0.62 * b], fill=lips)
        rgb.line([cx - 0.3 * a, cy + 0.56 * b, cx + 0.3 * a, cy + 0.56 * b], fill=_darker(lips, 0.5),
                 width=max(1, int(0.025 * b)))
    if t.mustache:
        rgb.rounded_rectangle([cx - 0.32 * a, cy + 0.35 * b, cx + 0.32 * a, cy + 0.47 * b], fill=hair,
                              radius=0.05 * b)
    if t.eyeglasses:
        frame, w = (20, 20, 24), max(1, int(0.045 * a))
        for s in (-1, 1):
            x = cx + s * ex
            rgb.ellipse([x - 0.27 * a, ey - 0.2 * b, x + 0.27 * a, ey + 0.2 * b], outline=frame, width=w)
            rgb.line([x + s * 0.27 * a, ey, cx + s * a, ey - 0.04 * b], fill=frame, width=w)
        rgb.line([cx - ex + 0.27 * a, ey, cx + ex - 0.27 * a, ey], fill=frame, width=w)


def _shade(img: Image.Image, cx: float, cy: float, a: float, b: float) -> Image.Image:
    """Darken the face towards its rim, lit from the upper left: flat cartoon faces lack the shading
    that face detectors key on."""
    h, w = img.height, img.width
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    d2 = ((x - cx + 0.15 * a) / a) ** 2 + ((y - cy + 0.2 * b) / b) ** 2
    inside = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0
    gain = np.where(inside, 1.08 - 0.55 * (np.clip(d2, 0, 1.6) / 1.6) ** 1.5, 1.0)
    px = np.asarray(img).astype(np.float32)
    px[..., :3] = np.clip(px[..., :3] * gain[..., None], 0, 255)
    return Image.fromarray(px.astype(np.uint8), mode="RGBA")


def render(spec: ImageSpec, traits: dict[int, Traits], cfg: WorldConfig) -> tuple[Image.Image, Image.Image]:
    """Draw one image: RGB portrait and its L-mode subject mask (255 = person, incl. hair and neck)."""
    r = _rng(cfg.seed, 2, spec.index)
    big = cfg.image_size * SUPERSAMPLE
    wall, accent = SCENES[spec.scene]
    bg = Image.new("RGB", (big, big), wall)
    ImageDraw.Draw(bg).rectangle(  # a window / light patch placed per image
        [r.uniform(0, 0.6) * big, r.uniform(0, 0.4) * big, r.uniform(0.7, 1.2) * big, r.uniform(0.45, 0.7) * big],
        fill=accent)
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    mask = Image.new("L", (big, big), 0)
    n = len(spec.identities)
    for k, ident in enumerate(spec.identities):
        t = traits[ident]
        scale = (1.0 if n == 1 else 0.56) * float(r.uniform(0.95, 1.04))
        cx = big * ((0.5 if n == 1 else 0.26 + 0.48 * k) + float(r.uniform(-0.035, 0.035)))
        cy = big * ((0.44 if n == 1 else 0.52) + float(r.uniform(-0.03, 0.03)))
        a, b = 0.22 * big * scale * t.face_width, 0.28 * big * scale * t.face_length
        clothes = CLOTHES[int(r.integers(len(CLOTHES)))]
        # Each person is drawn upright on its own layer and turned a few degrees about its face centre.
        p_rgb = Image.new("RGBA", (big, big), (0, 0, 0, 0))
        p_mask = Image.new("L", (big, big), 0)
        _draw_person(ImageDraw.Draw(p_rgb), ImageDraw.Draw(p_mask), t, cx, cy, a, b, clothes)
        p_rgb = _shade(p_rgb, cx, cy, a, b)
        angle = float(r.uniform(-6, 6))
        p_rgb = p_rgb.rotate(angle, resample=Image.BICUBIC, center=(cx, cy))
        p_mask = p_mask.rotate(angle, resample=Image.BILINEAR, center=(cx, cy))
        layer.alpha_composite(p_rgb)
        mask = Image.fromarray(np.maximum(np.asarray(mask), np.asarray(p_mask)))
    bg.paste(layer, (0, 0), layer)
    size = (cfg.image_size, cfg.image_size)
    img = bg.resize(size, Image.LANCZOS)
    small = np.asarray(mask.resize(size, Image.BILINEAR))
    return img, Image.fromarray(np.where(small >= 128, 255, 0).astype(np.uint8), mode="L")


def encode_jpeg(img: Image.Image) -> bytes:
    """Fixed encoder settings: same pixels give the same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    return buf.getvalue()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def write_world(out_dir: str | Path, cfg: WorldConfig) -> dict[str, int]:
    """Write the world into `out_dir` (CelebA layout plus masks, face counts, traits); return counts."""
    out = Path(out_dir)
    (out / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    (out / "subject_masks").mkdir(exist_ok=True)
    traits = {i: draw_traits(cfg.seed, i) for i in range(1, cfg.identities + 1)}
    specs = plan_images(cfg)
    # Split by identity, like CelebA: the last ~10% of identities are val, the ~10% before them test.
    n_hold = cfg.identities // 10
    split_of = {i: 1 if i > cfg.identities - n_hold else 2 if i > cfg.identities - 2 * n_hold else 0
                for i in traits}
    attr_rows, ident_rows, split_rows, face_rows = [], [], [], []
    for spec in tqdm(specs, desc="synthetic world", unit="img"):
        img, mask = render(spec, traits, cfg)
        name = f"{spec.image_id}.jpg"
        (out / "img_align_celeba" / name).write_bytes(encode_jpeg(img))
        mask.save(out / "subject_masks" / f"{spec.image_id}.png", format="PNG")
        labelled = spec.identities[0]
        attr_rows.append(f"{name} " + " ".join(f"{v:2d}" for v in attributes_of(traits[labelled]).values()))
        ident_rows.append(f"{name} {labelled}")
        split_rows.append(f"{name} {split_of[labelled]}")
        face_rows.append(f"{name} {len(spec.identities)}")
    _write_lines(out / "list_attr_celeba.txt", [str(len(specs)), " ".join(CELEBA_ATTRIBUTES) + " ", *attr_rows])
    _write_lines(out / "identity_CelebA.txt", ident_rows)
    _write_lines(out / "list_eval_partition.txt", split_rows)
    _write_lines(out / "face_counts.txt", face_rows)
    (out / "identity_traits.json").write_text(
        json.dumps({str(i): asdict(t) for i, t in traits.items()}, indent=2, sort_keys=True) + "\n")
    return {"images": len(specs), "identities": cfg.identities,
            "two_person_images": sum(len(s.identities) == 2 for s in specs)}
