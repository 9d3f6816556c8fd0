"""The synthetic CelebA-format world (cocoins.world.people)."""

import dataclasses
import hashlib
import json

import numpy as np
from PIL import Image

from cocoins.data.celeba import read_attributes
from cocoins.world.people import (CELEBA_ATTRIBUTES, ImageSpec, WorldConfig, attributes_of, draw_traits,
                                  render, write_world)

from conftest import TINY_WORLD


def _digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_gives_identical_bytes(tiny_world, tmp_path):
    write_world(tmp_path / "again", WorldConfig(**TINY_WORLD))
    assert _digest(tiny_world) == _digest(tmp_path / "again")


def test_other_seed_differs(tiny_world, tmp_path):
    write_world(tmp_path / "other", WorldConfig(**{**TINY_WORLD, "seed": 1}))
    a, b = _digest(tiny_world), _digest(tmp_path / "other")
    assert a.keys() == b.keys()
    assert a["img_align_celeba/000001.jpg"] != b["img_align_celeba/000001.jpg"]
    assert a["identity_traits.json"] != b["identity_traits.json"]


def test_layout_and_celeba_formats(tiny_world):
    n = 4 * 2 + 2
    names = sorted(p.name for p in (tiny_world / "img_align_celeba").iterdir())
    assert names == [f"{i:06d}.jpg" for i in range(1, n + 1)]
    masks = sorted(p.name for p in (tiny_world / "subject_masks").iterdir())
    assert masks == [f"{i:06d}.png" for i in range(1, n + 1)]
    lines = (tiny_world / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == str(n) and lines[1].split() == list(CELEBA_ATTRIBUTES) and len(lines) == n + 2
    assert all(len(line.split()) == 41 for line in lines[2:])
    ident = dict(line.split() for line in (tiny_world / "identity_CelebA.txt").read_text().splitlines())
    assert sorted(set(map(int, ident.values()))) == [1, 2, 3, 4]  # numbered from 1, like CelebA
    faces = dict(line.split() for line in (tiny_world / "face_counts.txt").read_text().splitlines())
    assert sorted(faces.values()) == ["1"] * 8 + ["2"] * 2
    parts = dict(line.split() for line in (tiny_world / "list_eval_partition.txt").read_text().splitlines())
    assert set(parts.values()) <= {"0", "1", "2"} and parts.keys() == ident.keys()
    for name in names:
        with Image.open(tiny_world / "img_align_celeba" / name) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (64, 64))


def test_attributes_match_drawn_traits(tiny_world):
    traits = json.loads((tiny_world / "identity_traits.json").read_text())
    ident = dict(line.split() for line in (tiny_world / "identity_CelebA.txt").read_text().splitlines())
    _, attrs = read_attributes(tiny_world / "list_attr_celeba.txt")
    for name, a in attrs.items():
        t = traits[ident[name]]
        assert (a["Male"] == 1) == t["male"] and (a["Young"] == 1) == t["young"]
        assert (a["Eyeglasses"] == 1) == t["eyeglasses"]
        assert (a["No_Beard"] == -1) == t["beard"] and (a["Mustache"] == 1) == t["mustache"]
        assert (a["Smiling"] == 1) == t["smiling"] and (a["Bald"] == 1) == (t["hair_style"] == "bald")
        hair = [c for c in ("Black", "Blond", "Brown", "Gray") if a[f"{c}_Hair"] == 1]
        assert hair == ([] if t["hair_style"] == "bald" else [t["hair_color"].capitalize()])
        assert a["Attractive"] == -1 and a["Wearing_Hat"] == -1  # never drawn: -1 everywhere


def test_traits_cover_the_trait_space():
    traits = [draw_traits(0, i) for i in range(1, 61)]
    assert {t.male for t in traits} == {True, False} and {t.eyeglasses for t in traits} == {True, False}
    assert {t.hair_color for t in traits} == {"black", "blond", "brown", "gray"}
    assert {t.hair_style for t in traits} == {"bald", "short", "long", "bangs", "wavy"}
    assert not any(t.beard or t.mustache for t in traits if not t.male)
    assert attributes_of(traits[0]).keys() == set(CELEBA_ATTRIBUTES)


def _render(traits, **change):
    cfg = WorldConfig(image_size=64)
    spec = ImageSpec("000001", (1,), "studio gray", 0)
    img, mask = render(spec, {1: dataclasses.replace(traits, **change)}, cfg)
    return np.asarray(img, dtype=int), np.asarray(mask)


def test_glasses_and_beard_are_drawn_where_they_belong():
    base = dataclasses.replace(draw_traits(0, 1), eyeglasses=False, beard=False, mustache=False, male=True,
                               skin="fair", hair_color="black", hair_style="short")
    plain, mask = _render(base)
    rows = np.nonzero(np.abs(_render(base, eyeglasses=True)[0] - plain).sum(-1) > 60)[0]
    assert rows.size and rows.mean() < 32                        # glasses: the upper half of the image
    rows = np.nonzero(np.abs(_render(base, beard=True)[0] - plain).sum(-1) > 60)[0]
    assert rows.size and rows.min() > 28                        # beard: below the eyes
    # The mask is the person: the face centre is in, the top corners (background) are out.
    assert mask[28, 32] == 255 and mask[0, 0] == 0 and mask[0, -1] == 0
    assert set(np.unique(mask)) == {0, 255}


def test_masks_are_binary_l_mode_and_two_person_masks_are_wider(tiny_world):
    faces = dict(line.split() for line in (tiny_world / "face_counts.txt").read_text().splitlines())
    for name, count in faces.items():
        with Image.open(tiny_world / "subject_masks" / name.replace(".jpg", ".png")) as im:
            assert im.mode == "L" and im.size == (64, 64)
            m = np.asarray(im)
        assert set(np.unique(m)) == {0, 255}
        cols = np.nonzero(m[20:40].any(0))[0]  # head height: two people span both sides, with a gap
        if count == "2":
            assert not m[20:40, 31:33].all() and cols.min() < 20 and cols.max() > 44


def test_default_world_size(tmp_path):
    counts = write_world(tmp_path / "w", WorldConfig())
    assert counts == {"images": 100, "identities": 24, "two_person_images": 4}
