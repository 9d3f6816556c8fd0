"""CelebAMask-HQ layout (cocoins.data.celeba_hq) through the reader, the ingest stage and the dataset masker."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cocoins.backends.masks import DatasetMasks
from cocoins.data.celeba import COLUMNS
from cocoins.data.celeba_hq import is_celeba_hq, read_celeba_hq
from cocoins.runtime import UserError

from test_data_stages import run, write_params

ATTRS = [f"Attr_{i}" for i in range(40)]
# idx -> image (width, height); masks are half size, so composing must upscale (nearest).
SIZES = {0: (32, 32), 1: (40, 24), 2001: (32, 32), 5: (32, 32), 7: (32, 32)}


def _box(size, x0, y0, x1, y1):
    m = np.zeros((size[1], size[0]), dtype=np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


# idx -> {part: mask at half the image size}; 5 has no parts, 7 has an unreadable one.
PARTS = {
    0: {"skin": _box((16, 16), 2, 2, 6, 6), "hair": _box((16, 16), 10, 8, 16, 16), "l_eye": _box((16, 16), 3, 3, 5, 5)},
    1: {"neck": _box((20, 12), 0, 0, 20, 1), "cloth": _box((20, 12), 5, 6, 9, 12)},
    2001: {"hat": _box((16, 16), 0, 0, 16, 3)},
}


def _write_mask(path: Path, m: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m).convert("RGB").save(path)   # the release mixes modes; white is part either way


@pytest.fixture()
def hq_root(tmp_path):
    root = tmp_path / "hq"
    rng = np.random.default_rng(0)
    (root / "CelebA-HQ-img").mkdir(parents=True)
    for idx, (w, h) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "CelebA-HQ-img" / f"{idx}.jpg")
    anno = root / "CelebAMask-HQ-mask-anno"
    for idx, parts in PARTS.items():
        for part, m in parts.items():
            _write_mask(anno / str(idx // 2000) / f"{idx:05d}_{part}.png", m)
    _write_mask(anno / "0" / "00007_skin.png", _box((16, 16), 0, 0, 4, 4))
    (anno / "0" / "00007_hair.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    full = np.full((8, 8), 255, dtype=np.uint8)
    _write_mask(anno / "0" / "00000_unknown.png", full)      # not a CelebAMask-HQ part: ignored
    _write_mask(anno / "0" / "02001_cloth.png", full)        # idx 2001 belongs in folder 1: ignored
    _write_mask(anno / "0" / "00005_skin.jpg", full)         # not a PNG: ignored, so 5 has no parts
    rows = [f"{idx}.jpg " + " ".join("1" if (idx + i) % 3 == 0 else "-1" for i in range(40)) for idx in SIZES]
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text("\n".join([str(len(rows)), " ".join(ATTRS), *rows]) + "\n")
    orig = {0: "000101.jpg", 1: "000102.jpg", 2001: "000103.jpg", 5: "000104.jpg", 7: "000105.jpg"}
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
        "idx         orig_idx    orig_file\n" + "".join(f"{i} {int(f[:-4]) - 1} {f}\n" for i, f in orig.items()))
    (root / "identity_CelebA.txt").write_text("000101.jpg 7\n000102.jpg 7\n000103.jpg 9\n000105.jpg 3\n")
    (root / "list_eval_partition.txt").write_text("000101.jpg 0\n000102.jpg 1\n000103.jpg 0\n000104.jpg 1\n"
                                                  "000105.jpg 2\n")
    return root


def _expected_union(idx: int) -> np.ndarray:
    union = np.zeros_like(next(iter(PARTS[idx].values())), dtype=bool)
    for m in PARTS[idx].values():
        union |= m > 0
    return np.kron(union, np.ones((2, 2), dtype=bool)).astype(np.uint8) * 255


def test_reader_unions_parts_and_maps_identities(hq_root, tmp_path):
    assert is_celeba_hq(hq_root) and not is_celeba_hq(tmp_path)
    out = tmp_path / "masks"
    df = read_celeba_hq(str(hq_root), mask_dir=out, mask_ref="data/world/subject_masks")
    assert list(df.columns) == COLUMNS
    df = df.set_index("image_id")
    assert list(df.index) == ["0", "1", "2001", "5", "7"]                      # attribute-file order
    assert df.loc["1", "path"] == f"{hq_root}/CelebA-HQ-img/1.jpg"
    assert (df.loc["1", "width"], df.loc["1", "height"]) == (40, 24)
    assert df["identity"].to_dict() == {"0": 7, "1": 7, "2001": 9, "5": -1, "7": 3}
    attrs = json.loads(df.loc["2001", "attributes"])
    assert len(attrs) == 40 and attrs["Attr_0"] == 1 and attrs["Attr_1"] == -1   # 2001 % 3 == 0
    assert (df["faces_annotated"] == -1).all()
    # Union of every part, upscaled nearest to the image size; unknown / misplaced files left out.
    for idx in ("0", "1", "2001"):
        assert df.loc[idx, "kept"] and df.loc[idx, "mask_path"] == f"data/world/subject_masks/{idx}.png"
        m = np.asarray(Image.open(out / f"{idx}.png"))
        assert m.dtype == np.uint8 and m.shape == _expected_union(int(idx)).shape
        np.testing.assert_array_equal(m, _expected_union(int(idx)))
    # No parts: kept without a mask. An unreadable part: skipped with the file named.
    assert df.loc["5", "kept"] and df.loc["5", "reason"] == "" and pd.isna(df.loc["5", "mask_path"])
    assert not df.loc["7", "kept"]
    assert df.loc["7", "reason"] == "unreadable part mask 00007_hair.png (UnidentifiedImageError)"
    assert pd.isna(df.loc["7", "mask_path"])
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2001.png"]


def test_reader_split_limit_and_errors(hq_root, tmp_path):
    val = read_celeba_hq(str(hq_root), split="val")
    assert val["image_id"].tolist() == ["1", "5"] and val["mask_path"].isna().all()   # no mask_dir: no masks
    assert read_celeba_hq(str(hq_root), limit=2)["image_id"].tolist() == ["0", "1"]
    (hq_root / "identity_CelebA.txt").unlink()
    assert (read_celeba_hq(str(hq_root))["identity"] == -1).all()
    (hq_root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("idx orig_idx orig_file\n0 100\n")
    with pytest.raises(UserError, match="CelebA-HQ-to-CelebA-mapping.txt:2"):
        read_celeba_hq(str(hq_root))
    (hq_root / "CelebA-HQ-to-CelebA-mapping.txt").unlink()
    with pytest.raises(UserError, match="list_eval_partition.txt"):
        read_celeba_hq(str(hq_root), split="train")
    (hq_root / "CelebAMask-HQ-attribute-anno.txt").unlink()
    with pytest.raises(UserError, match="CelebAMask-HQ-attribute-anno.txt"):
        read_celeba_hq(str(hq_root))


def test_ingest_stage_detects_layout_and_writes_masks(hq_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, data={"source": "celeba", "root": "hq"})
    run("ingest")
    images = pd.read_parquet("data/images.parquet")
    assert list(images.columns) == COLUMNS
    assert images["path"].str.startswith("hq/CelebA-HQ-img/").all()            # repo-relative
    assert json.loads(Path("data/world/SOURCE.json").read_text()) == {"source": "celeba", "root": "hq",
                                                                      "layout": "CelebAMask-HQ"}
    assert sorted(p.name for p in Path("data/world/subject_masks").iterdir()) == ["0.png", "1.png", "2001.png"]
    out = capsys.readouterr().out
    assert "[ingest] kept 4, skipped 1" in out and "[ingest] with masks: 3" in out and "identities: 2" in out
    # The mask stage's dataset backend reads them as the subject masks, or says why not.
    results = dict(zip(images["image_id"], DatasetMasks().mask_rows(images)))
    for idx in ("0", "1", "2001"):
        mask, reason = results[idx]
        assert reason == "" and np.array_equal(mask, _expected_union(int(idx)))
    assert results["5"] == (None, "no mask file")
    # Deterministic: a rerun writes the same table and masks, byte for byte.
    before = {p: p.read_bytes() for p in [Path("data/images.parquet"), *Path("data/world").rglob("*.*")]}
    run("ingest")
    assert before == {p: p.read_bytes() for p in [Path("data/images.parquet"), *Path("data/world").rglob("*.*")]}
