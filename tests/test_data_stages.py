"""The data stages ingest -> caption -> tag -> mask, end to end on a tiny world in a temp dir."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cocoins.runtime import UserError

from conftest import TINY_WORLD

STAGES = Path(__file__).resolve().parents[1] / "stages"
CONTRACT = {  # docs/contracts.md
    "data/images.parquet": ["image_id", "path", "width", "height", "identity", "mask_path", "faces_annotated",
                            "attributes", "kept", "reason"],
    "data/captions.parquet": ["image_id", "caption1", "caption2", "backend", "model", "kept", "reason"],
    "data/tagged.parquet": ["image_id", "tagged1", "tagged2", "backend", "attempts", "kept", "reason", "llm_error"],
    "data/subjects.parquet": ["image_id", "mask_path", "face_count", "face_counter", "mask_fraction", "kept",
                              "reason"],
}


def run(name):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", STAGES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()


def write_params(root, data=None, mask=None, **groups):
    """params.yaml for the tiny world; `groups` (caption=..., tag=..., precompute=...) update those groups."""
    params = {"data": {**{k: v for k, v in TINY_WORLD.items()}, "source": "synthetic", "root": "data/world",
                       **(data or {})},
              "caption": {"backend": "attributes", "seed": 0}, "tag": {"backend": "rules"},
              "mask": {"backend": "dataset", "face_counter": "mtcnn", "max_faces": 1, **(mask or {})}}
    for group, values in groups.items():
        params[group] = {**params.get(group, {}), **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_synthetic_pipeline_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    for name in ("ingest", "caption", "tag", "mask"):
        run(name)
    for path, columns in CONTRACT.items():
        assert list(pd.read_parquet(path).columns) == columns, path
    images = pd.read_parquet("data/images.parquet")
    assert len(images) == 10 and images["kept"].all()
    assert images["path"].str.startswith("data/world/img_align_celeba/").all()  # repo-relative
    tagged = pd.read_parquet("data/tagged.parquet")
    assert tagged["kept"].all() and tagged["tagged1"].str.contains("<subj1>").all()
    subjects = pd.read_parquet("data/subjects.parquet").set_index("image_id")
    two = images.loc[images["faces_annotated"] == 2, "image_id"]
    assert (subjects.loc[two, "reason"] == "2 faces (max 1)").all()
    kept = subjects[subjects["kept"]]
    assert len(kept) == 8 and (kept["face_count"] == 1).all()
    assert set(subjects["face_counter"]) <= {"mtcnn", "annotation"}
    assert sorted(p.name for p in Path("data/masks").iterdir()) == sorted(f"{i}.png" for i in kept.index)
    for image_id, row in kept.iterrows():
        assert row["mask_path"] == f"data/masks/{image_id}.png"
        m = np.asarray(Image.open(row["mask_path"]))
        assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
        assert row["mask_fraction"] == pytest.approx((m > 0).mean())
    out = capsys.readouterr().out
    assert "[mask] kept 8, skipped 2" in out and "[mask] faces: face counts from" in out
    # Rerunning gives the same tables, byte for byte (dvc.lock must not change).
    before = {p: Path(p).read_bytes() for p in CONTRACT}
    for name in ("ingest", "caption", "tag", "mask"):
        run(name)
    assert before == {p: Path(p).read_bytes() for p in CONTRACT}


def test_folder_source_skips_captioning_with_a_reason(tmp_path, monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 40), (10 * i, 0, 0)).save(photos / f"p{i}.jpg")
    (photos / "broken.jpg").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, data={"source": "folder", "root": "photos"}, mask={"face_counter": "annotation"})
    run("ingest")
    assert json.loads(Path("data/world/SOURCE.json").read_text()) == {"root": "photos", "source": "folder"}
    images = pd.read_parquet("data/images.parquet")
    assert images["kept"].sum() == 3 and images["path"].tolist()[0] == "photos/broken.jpg"
    run("caption")
    captions = pd.read_parquet("data/captions.parquet")
    assert len(captions) == 3 and not captions["kept"].any()
    assert captions["reason"].str.startswith("no attributes").all()
    run("tag")
    run("mask")
    subjects = pd.read_parquet("data/subjects.parquet")
    assert len(subjects) == 3 and (subjects["reason"] == "no tagged subject").all()
    assert "skipped upstream (ingest): 1" in capsys.readouterr().out


def test_ingest_refuses_to_overwrite_a_dataset_in_data_world(tmp_path, monkeypatch):
    (tmp_path / "data" / "world").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, data={"source": "folder", "root": "data/world"})
    with pytest.raises(UserError, match="ingest rewrites"):
        run("ingest")
    write_params(tmp_path, data={"root": "elsewhere"})
    with pytest.raises(UserError, match="data.root: data/world"):
        run("ingest")
