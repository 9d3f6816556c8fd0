"""cocoins/checks.py: the preflight building blocks answer in one line per problem, without loading weights."""

import importlib.util

import pytest

from cocoins import checks
from cocoins.runtime import UserError


def test_model_directory_must_exist_and_hold_its_marker(tmp_path):
    assert checks.model_problems(str(tmp_path / "nope"), "caption.model") == [
        f"caption.model: {tmp_path / 'nope'} does not exist; set it to a local model directory or a hub id"]
    (tmp_path / "llava").mkdir()
    assert "has no config.json" in checks.model_problems(str(tmp_path / "llava"), "caption.model")[0]
    (tmp_path / "llava" / "config.json").write_text("{}")
    assert checks.model_problems(str(tmp_path / "llava"), "caption.model") == []
    assert checks.model_problems("", "caption.model") == ["caption.model is empty: set it to a local directory or a hub id"]


def test_hub_id_offline_must_be_cached(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    problems = checks.model_problems("org/not-cached", "models.sdxl", "model_index.json")
    assert len(problems) == 1 and "not in the Hugging Face cache" in problems[0] and "hf download org/not-cached" in problems[0]
    # A cached snapshot with the marker file answers ready, offline.
    snapshot = tmp_path / "models--org--cached" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (tmp_path / "models--org--cached" / "refs").mkdir()
    (tmp_path / "models--org--cached" / "refs" / "main").write_text("abc")
    assert checks.model_problems("org/cached", "models.sdxl", "model_index.json") == []


def test_hub_id_online_unreachable_names_the_fix(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def refuse(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub, "file_exists", refuse)
    line, = checks.model_problems("org/gated", "caption.model")
    assert "cannot reach org/gated on the hub (no route to host)" in line and "hf auth login" in line


def test_files_dirs_and_packages(tmp_path, monkeypatch):
    assert checks.file_problems(tmp_path / "x.pt", "mask.sam2_checkpoint", "download it") == [
        f"mask.sam2_checkpoint: {tmp_path / 'x.pt'} does not exist; download it"]
    assert checks.dir_problems(tmp_path, "eval.arcface_dir", "unused") == []
    assert checks.package_problems("json", "the CLI", "pip") == []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert checks.package_problems("insightface", "eval.face_backend arcface", 'pip install -e ".[arcface]"') == [
        'eval.face_backend arcface needs the `insightface` package; install it with pip install -e ".[arcface]"']


def test_require_lists_every_problem_in_one_error():
    checks.require("train", [])
    with pytest.raises(UserError, match=r"train: not ready, 2 problem\(s\):\n  a\n  b"):
        checks.require("train", ["a", "b"])
