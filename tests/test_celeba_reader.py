"""Readers building the images table (cocoins.data.celeba), on the synthetic world and on bad inputs."""

import json
import shutil
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cocoins.data.celeba import COLUMNS, read_celeba, read_folder
from cocoins.runtime import UserError


def test_reads_synthetic_world_with_relative_paths(tiny_world, tmp_path, monkeypatch):
    shutil.copytree(tiny_world, tmp_path / "data" / "world")
    monkeypatch.chdir(tmp_path)
    df = read_celeba("data/world")
    assert list(df.columns) == COLUMNS and len(df) == 10 and df["kept"].all()
    first = df.iloc[0]
    assert first["image_id"] == "000001"
    assert first["path"] == "data/world/img_align_celeba/000001.jpg"
    assert first["mask_path"] == "data/world/subject_masks/000001.png"
    assert (first["width"], first["height"]) == (64, 64)
    assert sorted(df["faces_annotated"]) == [1] * 8 + [2] * 2
    assert df["identity"].min() == 1
    attrs = json.loads(first["attributes"])
    assert len(attrs) == 40 and set(attrs.values()) <= {1, -1}
    assert df["reason"].eq("").all()


def test_absolute_root_gives_absolute_paths(tiny_world):
    df = read_celeba(str(tiny_world), limit=3)
    assert df["image_id"].tolist() == ["000001", "000002", "000003"]  # limit: first N in file order
    assert df["path"].str.startswith(str(tiny_world)).all()


def test_split_filter(tiny_world):
    parts = dict(line.split() for line in (tiny_world / "list_eval_partition.txt").read_text().splitlines())
    df = read_celeba(str(tiny_world), split="train")
    assert sorted(df["image_id"] + ".jpg") == sorted(n for n, v in parts.items() if v == "0")


def test_missing_and_malformed_celeba_files(tiny_world, tmp_path):
    root = tmp_path / "w"
    shutil.copytree(tiny_world, root)
    (root / "img_align_celeba" / "000002.jpg").unlink()
    (root / "subject_masks" / "000003.png").unlink()
    (root / "face_counts.txt").unlink()
    df = read_celeba(str(root)).set_index("image_id")
    assert df.loc["000002", "reason"] == "image file missing" and not df.loc["000002", "kept"]
    assert pd.isna(df.loc["000003", "mask_path"])
    assert (df["faces_annotated"] == -1).all()
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    (root / "list_attr_celeba.txt").write_text("\n".join(lines[:3] + [lines[3] + " 1"] + lines[4:]) + "\n")
    with pytest.raises(UserError, match="list_attr_celeba.txt:4"):
        read_celeba(str(root))
    (root / "list_attr_celeba.txt").unlink()
    with pytest.raises(UserError, match="CelebA-format"):
        read_celeba(str(root))


def _huge_png(path, width=100_000, height=100_000):
    """A valid 1x1 PNG whose header claims a giant size (a decompression bomb's calling card)."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))


@pytest.fixture()
def bad_corpus(tmp_path):
    """One file per failure mode, plus files that are odd but fine."""
    root = tmp_path / "corpus"
    (root / "nested" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    rgb.save(root / "good.jpg", quality=90)
    rgb.save(root / "nested" / "deeper" / "inner.png")
    rgb.convert("L").save(root / "gray.png")
    rgb.convert("CMYK").save(root / "cmyk.jpg")
    rgb.convert("RGBA").save(root / "rgba.png")
    rgb.convert("P").save(root / "palette.png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(300))
    rgb.save(root / "full.png")
    (root / "truncated.png").write_bytes((root / "full.png").read_bytes()[:200])
    (root / "full.png").unlink()
    _huge_png(root / "huge.png")             # PIL's own bomb guard refuses it at open
    _huge_png(root / "wide.png", 9000, 10)   # under PIL's pixel limit, over our side limit
    (root / "notes.txt").write_text("not an image")
    rgb.save(tmp_path / "outside.jpg")
    (root / "escape.jpg").symlink_to(tmp_path / "outside.jpg")
    rgb.save(root / "twin.jpg")
    rgb.save(root / "twin.png")
    return root


def test_bad_input_corpus_ends_in_kept_or_skip_rows(bad_corpus):
    df = read_folder(str(bad_corpus)).set_index("image_id")
    reasons = df["reason"].to_dict()
    assert set(reasons) == {"cmyk", "corrupt", "empty", "escape", "good", "gray", "huge",
                            "nested__deeper__inner", "palette", "rgba", "truncated", "twin", "wide"}
    for ok in ("good", "gray", "cmyk", "rgba", "palette", "nested__deeper__inner"):
        assert reasons[ok] == "" and df.loc[ok, "kept"] and (df.loc[ok, "width"], df.loc[ok, "height"]) == (40, 48)
    assert reasons["empty"] == "empty file (0 bytes)"
    assert reasons["corrupt"].startswith("unreadable image")
    assert reasons["truncated"].startswith("unreadable image")
    assert reasons["huge"].startswith("image too large")
    assert reasons["wide"] == "image too large (9000x10, max side 8192)"
    assert reasons["escape"] == "path escapes the data root (symlink)"
    assert (df.loc[df["kept"], "attributes"] == "{}").all() and (df["identity"] == -1).all()
    assert df["mask_path"].isna().all() and (df["faces_annotated"] == -1).all()
    assert not df.loc[["empty", "corrupt", "truncated", "huge", "wide", "escape"], "kept"].any()


def test_folder_duplicate_ids_are_skipped_not_overwritten(bad_corpus):
    df = read_folder(str(bad_corpus))
    twins = df[df["image_id"] == "twin"]
    assert twins["kept"].tolist() == [True, False]
    assert twins["reason"].iloc[1].startswith("duplicate image id")
    assert twins["path"].iloc[0].endswith("twin.jpg")


def test_folder_limit_and_missing_root(bad_corpus, tmp_path):
    assert len(read_folder(str(bad_corpus), limit=2)) == 2
    with pytest.raises(UserError, match="not a folder"):
        read_folder(str(tmp_path / "nope"))
