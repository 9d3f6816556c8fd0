"""Preflight of the data stages: one line per problem, naming the fix, in seconds, with no weights loaded."""

import importlib.util
import json
import time
from pathlib import Path

import pytest

from cocoins.backends.preflight_data import (caption_problems, mask_problems, precompute_problems, tag_problems)
from cocoins.config import CaptionParams, MaskParams, PrecomputeParams, TagParams

from test_llm_taggers import closed_port, serve_show, show_reply


@pytest.fixture(scope="session")
def httpserver_listen_address():
    return ("127.0.0.1", 0)


@pytest.fixture()
def missing_package(monkeypatch):
    """Make `find_spec` miss the named modules (as if not installed), everything else as it is."""
    real = importlib.util.find_spec
    hidden: set[str] = set()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    return hidden


def model_dir(root: Path, marker: str = "config.json") -> str:
    root.mkdir(parents=True)
    (root / marker).write_text("{}")
    return str(root)


def test_offline_backends_have_no_problems():
    assert caption_problems(CaptionParams()) == [] and tag_problems(TagParams()) == []
    assert mask_problems(MaskParams(face_counter="annotation")) == []
    assert precompute_problems(PrecomputeParams(), "mini") == [] == precompute_problems(PrecomputeParams(), "tiny")


def test_a_missing_model_dir_is_one_line(tmp_path):
    (problem,) = tag_problems(TagParams(backend="transformers", model=str(tmp_path / "llm")))
    assert problem.startswith(f"tag.model: {tmp_path / 'llm'} does not exist")
    empty = tmp_path / "llava"
    empty.mkdir()
    (problem,) = caption_problems(CaptionParams(backend="llava", model=str(empty)))
    assert problem == f"caption.model: {empty} has no config.json; point it at a saved model directory (save_pretrained)"
    assert caption_problems(CaptionParams(backend="llava", model=model_dir(tmp_path / "ok"))) == []


def test_a_stopped_ollama_is_one_line():
    host = f"http://127.0.0.1:{closed_port()}"
    (problem,) = tag_problems(TagParams(backend="ollama", host=host))
    assert problem.startswith(f"tag.host: no ollama server at {host} (connection refused); start the server "
                              "(`ollama serve`)") and "`ollama pull llama3.1:8b`" in problem
    (problem,) = caption_problems(CaptionParams(backend="ollama", model="llava:7b", host=host))
    assert problem.startswith(f"caption.host: no ollama server at {host}")


def test_a_model_not_pulled_is_one_line(httpserver):
    serve_show(httpserver, models=("llama3.1:8b",))
    host = httpserver.url_for("/").rstrip("/")
    assert tag_problems(TagParams(backend="ollama", host=host)) == []
    (problem,) = tag_problems(TagParams(backend="ollama", host=host, model="qwen2.5:7b"))
    assert problem == (f"tag.model: qwen2.5:7b is not pulled on the ollama server at {host}; run `ollama pull "
                       "qwen2.5:7b` there, or set tag.model to a model it has (`ollama list`)")
    # The captioner needs a model that reads images: ollama lists "vision" among its capabilities.
    (problem,) = caption_problems(CaptionParams(backend="ollama", model="llama3.1:8b", host=host))
    assert problem.startswith("caption.model: llama3.1:8b does not read images (capabilities: completion)")


def test_a_vision_model_and_a_server_of_another_release_pass(httpserver):
    reply = show_reply(["completion", "vision"])
    del reply["model_info"]          # a field this client requires; the server is up and has the model all the same
    httpserver.expect_request("/api/show").respond_with_json(reply)
    host = httpserver.url_for("/").rstrip("/")
    assert caption_problems(CaptionParams(backend="ollama", model="llava:7b", host=host)) == []


def test_something_else_on_the_port_is_one_line(httpserver):
    httpserver.expect_request("/api/show").respond_with_data("<html>hello</html>", content_type="text/html")
    (problem,) = tag_problems(TagParams(backend="ollama", host=httpserver.url_for("/").rstrip("/")))
    assert "does not answer like an ollama server" in problem


def test_a_missing_package_is_one_line(tmp_path, missing_package):
    detector = model_dir(tmp_path / "gdino")
    grounded = MaskParams(backend="grounded_sam2", face_counter="grounding", detector=detector, sam2_checkpoint="random")
    assert mask_problems(grounded) == []
    missing_package.add("sam2")
    (problem,) = mask_problems(grounded)
    assert problem.startswith("mask.backend: grounded_sam2 needs the `sam2` package; install it with `make install`")
    missing_package.add("facenet_pytorch")
    (problem,) = mask_problems(MaskParams())
    assert problem.startswith("mask.face_counter: mtcnn needs the `facenet_pytorch` package")
    assert mask_problems(MaskParams(), all_annotated=True) == []   # the stage falls back to the annotation
    missing_package.add("ollama")
    (problem,) = tag_problems(TagParams(backend="ollama"))
    assert problem.startswith("tag.backend: ollama needs the `ollama` package")


def test_mask_files_and_the_original_grounding_dino(tmp_path):
    p = MaskParams(backend="grounded_sam2", face_counter="annotation", detector_impl="groundingdino",
                   sam2_checkpoint=str(tmp_path / "sam2.pt"), sam2_config="configs/sam2.1/nope.yaml",
                   groundingdino_config=str(tmp_path / "gd.py"), groundingdino_checkpoint=str(tmp_path / "gd.pth"),
                   groundingdino_text_encoder=str(tmp_path / "bert"), dtype="bf16")
    problems = mask_problems(p)
    starts = [line.split(":")[0] for line in problems]
    assert starts == ["mask.sam2_config", "mask.sam2_checkpoint", "mask.groundingdino_config",
                      "mask.groundingdino_checkpoint", "mask.groundingdino_text_encoder", "mask.dtype"], problems
    (tmp_path / "sam2.pt").write_bytes(b"")
    (tmp_path / "gd.py").write_text("")
    (tmp_path / "gd.pth").write_bytes(b"")
    model_dir(tmp_path / "bert")
    ok = MaskParams(**{**vars(p), "sam2_config": "configs/sam2.1/sam2.1_hiera_t.yaml", "dtype": "fp32"})
    assert mask_problems(ok) == []


def test_precompute_base_and_vae(tmp_path):
    assert precompute_problems(PrecomputeParams(), model_dir(tmp_path / "sdxl", "model_index.json")) == []
    base = tmp_path / "base"
    base.mkdir()
    (base / "reference.json").write_text(json.dumps({"sdxl": str(tmp_path / "gone")}))
    (problem,) = precompute_problems(PrecomputeParams(), str(base))
    assert problem.startswith(f"models.sdxl: {tmp_path / 'gone'} does not exist")
    (problem,) = precompute_problems(PrecomputeParams(vae=str(tmp_path / "vae")), "mini")
    assert problem.startswith(f"precompute.vae: {tmp_path / 'vae'} does not exist")
    whole = tmp_path / "pipe"
    model_dir(whole / "vae")          # a diffusers model dir: its vae/ is used
    assert precompute_problems(PrecomputeParams(vae=str(whole)), "mini") == []


def test_all_checks_together_take_seconds(tmp_path, missing_package):
    """A profile with a missing model, a stopped ollama and a missing extra: three lines, in seconds."""
    missing_package.add("sam2")
    start = time.monotonic()
    problems = (caption_problems(CaptionParams(backend="llava", model=str(tmp_path / "llava")))
                + tag_problems(TagParams(backend="ollama", host=f"http://127.0.0.1:{closed_port()}"))
                + mask_problems(MaskParams(backend="grounded_sam2", face_counter="annotation",
                                           detector=model_dir(tmp_path / "gdino"), sam2_checkpoint="random"))
                + precompute_problems(PrecomputeParams(), "mini"))
    elapsed = time.monotonic() - start
    assert len(problems) == 3 and elapsed < 5, (problems, elapsed)


def test_stages_stop_before_their_first_item(tmp_path, monkeypatch):
    """The mask stage with a SAM 2 checkpoint that is not there: stopped before its work dir exists."""
    from cocoins.runtime import UserError

    from test_data_stages import run, write_params

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, mask={"backend": "grounded_sam2", "face_counter": "annotation",
                                 "detector": model_dir(tmp_path / "gdino"), "sam2_checkpoint": "models/none.pt"})
    for name in ("ingest", "caption", "tag"):
        run(name)
    with pytest.raises(UserError, match=r"^mask: not ready, 1 problem\(s\):\n  mask.sam2_checkpoint: models/none.pt "):
        run("mask")
    assert not Path("data/work/mask").exists()
