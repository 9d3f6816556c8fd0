"""Scoring a table of images: per-image pass, group metrics, the metrics.json layout, and score_folder's CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cocoins.eval.metrics.faces import DlibFaceEmbedder
from cocoins.eval.report import dvc_metrics, markdown_table, nested_metrics, plot_tables
from cocoins.eval.score_folder import main as score_folder, read_manifest
from cocoins.eval.metrics.bootstrap import Bootstrap
from cocoins.eval.scoring import Backends, PerImage, check_manifest, extract, scene_scores, score_table
from cocoins.runtime import UserError


class ColorFaces:
    """Stand-in face embedder: the embedding is the image's mean colour; pure black means "no face"."""
    name = "color"

    def embed(self, images):
        out = []
        for im in images:
            v = np.asarray(im, dtype=np.float64).reshape(-1, 3).mean(0)
            out.append(None if not v.any() else v / np.linalg.norm(v))
        return out


class RedClip:
    """Stand-in CLIP: the score is the red fraction of the image, whatever the text."""

    def scores(self, images, texts):
        assert len(images) == len(texts)
        return torch.tensor([np.asarray(im, dtype=np.float64)[..., 0].mean() / 255 for im in images])


class MeanFeature(torch.nn.Module):
    def forward(self, x):
        return x.double().mean(dim=(2, 3))   # [B, 3]: per-channel mean


COLORS = {"a": (200, 10, 10), "b": (10, 200, 10), "c": (10, 10, 200)}


def _table():
    """Set s1: `good` draws each identity in its own colour; `base` gives random colours, one black (no face)."""
    rng = np.random.default_rng(0)
    rows, images = [], []
    for method in ("good", "base"):
        for ident in ("a", "a", "b", "b", "c", "c"):
            color = COLORS[ident] if method == "good" else tuple(int(v) for v in rng.integers(1, 255, 3))
            if method == "base" and len(images) == 6:
                color = (0, 0, 0)
            images.append(Image.new("RGB", (8, 8), color))
            rows.append({"path": f"{method}/{len(images)}.png", "method": method, "identity": ident,
                         "prompt": f"a {ident}", "subject": "man" if ident != "c" else "woman", "set": "s1",
                         "setting": "daily life" if ident == "a" else "outdoor"})
    return check_manifest(pd.DataFrame(rows)), images


def _backends():
    return Backends(faces=ColorFaces(), clip=RedClip(), fid_feature=MeanFeature(), fid_size=8,
                    unavailable={"dreamsim": "no checkpoints"})


def test_group_metrics_have_known_values():
    table, images = _table()
    per = extract(table, lambda i: images[i], _backends(), batch_size=4)
    assert per.dreamsim is None and len(per.faces) == 12 and per.faces[6] is None
    scores = score_table(table, per, _backends(), fid_reference="base")
    good, base = scores.sets["s1"]["good"], scores.sets["s1"]["base"]
    assert good["face_sim"] == pytest.approx(1.0) and good["face_detection_rate"] == 1.0
    assert base["face_sim"] < 0.99 and base["face_detection_rate"] == pytest.approx(5 / 6)
    assert good["face_div"] > base["face_div"]
    assert good["clip"] == pytest.approx(np.mean([200, 200, 10, 10, 10, 10]) / 255)
    assert good["fid"] > 0 and base["fid"] is None and good["dreamsim"] is None
    assert scores.reasons["s1.base.fid"] == "base is the FID reference"
    assert scores.unavailable == {"dreamsim": "no checkpoints"}
    subjects = {(r["subject"], r["method"]): r for r in scores.subjects}
    assert subjects[("woman", "good")]["images"] == 2 and subjects[("woman", "good")]["face_div"] is None
    assert subjects[("man", "good")]["label"] == "man / good" and "fid" not in subjects[("man", "good")]
    assert {r["setting"] for r in scores.settings} == {"daily life", "outdoor"}
    assert scores.overall["good"]["face_sim"] == pytest.approx(1.0)


def test_latents_give_the_always_available_metric():
    table, images = _table()
    g = torch.Generator().manual_seed(0)
    codes = {k: torch.randn(1, 4, 4, 4, generator=g) for k in COLORS}
    latents = torch.cat([codes[i] for i in table["identity"]])
    scores = score_table(table, PerImage(), Backends(), latents=latents)
    assert scores.sets["s1"]["good"]["latent_sim"] == pytest.approx(1.0)
    assert scores.sets["s1"]["good"]["face_sim"] is None


def test_dvc_layout_prefixes_other_methods_and_keeps_reasons():
    table, images = _table()
    scores = score_table(table, extract(table, lambda i: images[i], _backends()), _backends(), "base")
    flat = dvc_metrics(scores, primary="good", reference="base")
    assert set(flat) == {"s1", "overall"}
    assert flat["s1"]["face_sim"] == 1.0 and flat["s1"]["base_face_sim"] < 1
    assert flat["s1"]["face_sim_gap"] == pytest.approx(1.0 - flat["s1"]["base_face_sim"], abs=1e-6)
    assert flat["s1"]["null_reasons"]["base.fid"] == "base is the FID reference"
    assert flat["overall"]["null_reasons"] == {"dreamsim": "no checkpoints"}
    json.dumps(flat, allow_nan=False)
    nested = nested_metrics(scores)
    assert nested["sets"]["s1"]["good"]["face_sim"] == 1.0 and "s1.base.fid" in nested["null_reasons"]
    plots = plot_tables(scores)
    # One file per (set, metric, subject or setting) with data: the null DreamSim and the set-level FID have none.
    assert "s1_face_sim_per_subject" in plots and "s1_clip_per_setting" in plots
    assert not any("dreamsim" in k or "fid" in k for k in plots)
    row = {(r["label"]): r for r in plots["s1_face_sim_per_subject"]}["man / good"]
    assert row["value"] == pytest.approx(1.0) and row["subject"] == "man" and row["ci_low"] == pytest.approx(1.0)
    assert len(plots["s1_face_sim_per_subject"]) == 4 and plots["s1_clip_per_subject"][0]["ci_low"] is None
    assert markdown_table(["a", "b", "c"], [[None, 0.12345, 0.00049]]).splitlines()[2] == "| n/a | 0.123 | 4.90e-04 |"


def test_div_within_each_subject_and_the_per_image_reference():
    """man: codes m1 (E0) and m2 (E1); woman: codes w1 and w2 that draw the same person (E2). Two images each;
    `base` holds the very same images (it has no identity input, so each image is its own person)."""
    e = np.eye(3)
    vectors = {"m1": e[0], "m2": e[1], "w1": e[2], "w2": e[2]}
    rows, faces = [], []
    for method in ("good", "base"):
        for ident, v in vectors.items():
            for k in range(2):
                rows.append({"path": f"{method}/{ident}/{k}.png", "method": method, "identity": ident, "prompt": "p",
                             "subject": "man" if ident[0] == "m" else "woman", "set": "s1"})
                faces.append(v)
    table = check_manifest(pd.DataFrame(rows))
    scores = score_table(table, PerImage(faces=faces), Backends(faces=ColorFaces()), boot=Bootstrap(200, seed=0))
    flat = dvc_metrics(scores, primary="good", reference="base")["s1"]
    # Across subjects: of the 12 ordered pairs of code means only w1-w2 (2 pairs) has cosine 1.
    assert flat["face_div"] == pytest.approx(1 - 2 / 12)
    assert flat["face_div_man"] == pytest.approx(1.0) and flat["face_div_woman"] == pytest.approx(0.0)
    # Any resample of the two woman codes that draws both has Div 0; drawing one twice is left out.
    assert (flat["face_div_woman_ci_low"], flat["face_div_woman_ci_high"]) == pytest.approx((0.0, 0.0))
    assert flat["face_sim_man"] == pytest.approx(1.0) and flat["face_sim_ci_low"] == pytest.approx(1.0)
    # base, man: 4 images E0 E0 E1 E1, each its own person: 4 of 12 ordered pairs have cosine 1.
    assert flat["base_face_div_man"] == pytest.approx(1 - 4 / 12) and flat["base_face_sim_man"] == pytest.approx(1.0)
    assert flat["base_face_div_woman"] == pytest.approx(0.0)
    assert flat["base_face_div_ci_low"] <= flat["base_face_div"] <= flat["base_face_div_ci_high"]
    assert "face_div_man" not in dvc_metrics(scores, primary="good", reference="base")["overall"]


def test_scene_fidelity_reads_the_prompted_scene():
    # Scene head probabilities over (studio gray, sky blue, park green, ...); settings name the prompted scene.
    probs = torch.zeros(4, 8)
    probs[0, 1], probs[1, 1], probs[2, 2], probs[3, 0] = 0.9, 0.3, 0.6, 1.0
    probs[1, 2] = 0.7
    settings = ["sky blue", "sky blue", "park green", "portrait"]
    scores, why = scene_scores(probs, settings, ["a", "a", "b", "b"], Bootstrap(100, seed=0))
    assert why == "" and scores["scene_fidelity"] == pytest.approx((0.9 + 0.3 + 0.6) / 3)
    assert scores["scene_accuracy"] == pytest.approx(2 / 3)
    # Resampling codes: a's images average 0.6, b's 0.6 (only its scene-naming image counts).
    assert (scores["scene_fidelity_ci_low"], scores["scene_fidelity_ci_high"]) == pytest.approx((0.6, 0.6))
    scores, why = scene_scores(probs[3:], ["portrait"], ["b"], Bootstrap(100))
    assert scores["scene_fidelity"] is None and "names one of the world's scenes" in why


def test_manifest_problems_are_named(tmp_path):
    with pytest.raises(ValueError, match="lacks column.*identity"):
        check_manifest(pd.DataFrame({"path": ["x.png"], "method": ["m"]}))
    (tmp_path / "m.csv").write_text("path,method,identity,prompt,subject,set\nnope.png,m,a,p,man,s\n")
    with pytest.raises(UserError, match="1 image\\(s\\) of .* not found, first: .*nope.png.*--root"):
        read_manifest(tmp_path / "m.csv")


@pytest.mark.skipif(not DlibFaceEmbedder().available()[0], reason="dlib not installed")
def test_score_folder_cli_on_another_methods_images(tiny_world, tmp_path, capsys):
    """Another method's folder: real dlib faces; `right` groups by true identity, `wrong` mixes people."""
    ids = dict(line.split() for line in (tiny_world / "identity_CelebA.txt").read_text().splitlines())
    faces = dict(line.split() for line in (tiny_world / "face_counts.txt").read_text().splitlines())
    singles = sorted((ident, name) for name, ident in ids.items() if faces[name] == "1")
    rows = []
    for k, (ident, name) in enumerate(singles):
        rows.append(["right", ident, name])
        rows.append(["wrong", str(k % 4), name])     # each group now holds different people
    manifest = pd.DataFrame([{"path": f"img_align_celeba/{n}", "method": m, "identity": i, "subject": "person",
                              "prompt": "A person is looking at the camera.", "set": "portraits"} for m, i, n in rows])
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "metrics.json"
    score_folder([str(tmp_path / "manifest.csv"), "--root", str(tiny_world), "--out", str(out),
                  "--clip-model", str(tmp_path / "no-clip")])
    result = json.loads(out.read_text())
    right, wrong = result["sets"]["portraits"]["right"], result["sets"]["portraits"]["wrong"]
    assert right["face_detection_rate"] == 1.0 and right["images"] == len(singles)
    assert right["face_sim"] > wrong["face_sim"]
    assert right["clip"] is None and "no-clip does not exist" in result["null_reasons"]["clip"]
    assert "wrote" in capsys.readouterr().out


def test_embeddings_on_disk_score_like_embeddings_in_memory(tmp_path):
    """evaluate keeps the metric models' embeddings in a FeatureStore (read back a batch at a time): the same
    scores as holding them in memory, the black image still counted as "no face"."""
    table, images = _table()
    in_memory = score_table(table, extract(table, lambda i: images[i], _backends(), batch_size=4), _backends(),
                            "base", boot=Bootstrap(50, seed=0))
    per = extract(table, lambda i: images[i], _backends(), batch_size=4, store=tmp_path / "features")
    assert per.faces is None and per.found.tolist().count(False) == 1 and callable(per.fid)
    on_disk = score_table(table, per, _backends(), "base", boot=Bootstrap(50, seed=0))
    for method in ("good", "base"):
        a, b = in_memory.sets["s1"][method], on_disk.sets["s1"][method]
        assert a.keys() == b.keys()
        for key in a:
            assert (a[key] is None) == (b[key] is None), key
            if isinstance(a[key], float):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key    # faces stored as float32
    assert in_memory.reasons == on_disk.reasons
