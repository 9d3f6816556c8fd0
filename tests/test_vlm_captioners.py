"""Model captioners: a tiny random LLaVA-Next through the real loading and stage code; ollama over HTTP."""

import base64
import io
import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from werkzeug import Response

from cocoins.backends.chat import OllamaUnavailable
from cocoins.backends.vlm_captioners import LlavaCaptioner, OllamaCaptioner

from test_data_stages import run, write_params

DATA = Path(__file__).parent / "data" / "ollama"
PROMPTS = ("Describe the person in this photo in one sentence.", "Write a short caption for this photo.")


@pytest.fixture(scope="session")
def httpserver_listen_address():
    return ("127.0.0.1", 0)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from cocoins.backends.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "llava")


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 48), (64, 64), (30, 50)]):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    paths.insert(1, str(tmp_path / "bad.jpg"))
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(4)], "path": paths, "attributes": "{}"})


def test_llava_captioner_batches_two_prompts(tiny_llava, images):
    cap = LlavaCaptioner(str(tiny_llava), PROMPTS, torch.device("cpu"), dtype="fp16", max_new_tokens=6,
                         batch_size=2)
    calls = []
    generate = cap._generate
    cap._generate = lambda ims, prompt: calls.append((len(ims), prompt)) or generate(ims, prompt)
    out = cap.caption_batch(images)
    # 3 readable images, batch 2, 2 prompts: batches of 2 and 1, each prompt once per batch.
    assert calls == [(2, PROMPTS[0]), (2, PROMPTS[1]), (1, PROMPTS[0]), (1, PROMPTS[1])]
    assert out[1] == ("", "", "unreadable image (UnidentifiedImageError)")
    for c1, c2, reason in (out[0], out[2], out[3]):
        assert reason == "" if (c1 and c2) else reason == "empty caption from the model"
        assert "\n" not in c1 + c2
    assert cap._loaded[1].dtype == torch.float32   # CPU computes in fp32 whatever the dtype param says
    # Batched captions equal one-by-one captions for same-size images (left padding is handled).
    same = images.iloc[[0, 0]].reset_index(drop=True)
    one = LlavaCaptioner(str(tiny_llava), PROMPTS, torch.device("cpu"), max_new_tokens=6, batch_size=1)
    assert cap.caption_batch(same) == one.caption_batch(same)


def test_caption_stage_with_tiny_llava(tiny_llava, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, caption={"backend": "llava", "model": str(tiny_llava), "max_new_tokens": 5,
                                    "batch_size": 4, "chunk_size": 4, "device": "cpu"})
    run("ingest")
    run("caption")
    table = pd.read_parquet("data/captions.parquet")
    assert len(table) == 10 and (table["backend"] == "llava").all() and (table["model"] == str(tiny_llava)).all()
    # Greedy decoding of random weights may end at once on another CPU: such a row must be a recorded skip,
    # every other row kept with both captions.
    has_text = (table["caption1"].str.len() > 0) & (table["caption2"].str.len() > 0)
    assert (table["kept"] == has_text).all()
    assert (table.loc[~table["kept"], "reason"] == "empty caption from the model").all()
    assert len(list(Path("data/work/caption").glob("chunk-*.parquet"))) == 3   # 10 images, chunks of 4
    assert "processed now / reused from data/work/caption: 10 / 0" in capsys.readouterr().out


def test_ollama_captioner_sends_base64_images(httpserver, images):
    requests = []

    def handler(request):
        requests.append(request.json)
        return Response((DATA / "caption_good.json").read_text(), content_type="application/json")

    httpserver.expect_request("/api/chat", method="POST").respond_with_handler(handler)
    cap = OllamaCaptioner("llava:7b", PROMPTS, httpserver.url_for("/").rstrip("/"), timeout=5, retry_wait=0)
    out = cap.caption_batch(images)
    caption = "A young woman with long brown hair smiles at the camera."
    assert [o[2] for o in out] == ["", "unreadable image (UnidentifiedImageError)", "", ""]
    assert out[0] == (caption, caption, "")
    assert len(requests) == 6 and [r["messages"][0]["content"] for r in requests[:2]] == list(PROMPTS)
    sent = Image.open(io.BytesIO(base64.b64decode(requests[0]["messages"][0]["images"][0])))
    assert sent.format == "JPEG" and sent.size == (48, 40)
    assert requests[0]["model"] == "llava:7b" and requests[0]["options"]["temperature"] == 0


def test_ollama_captioner_refused_requests_are_skip_rows_and_a_dead_server_stops(httpserver, images):
    """A 4xx is about this image: a skip row. A 500 after the retries, or no server, is not the image's fault:
    OllamaUnavailable, so the stage stops instead of recording dropped images."""
    httpserver.expect_request("/api/chat").respond_with_data((DATA / "error_400.json").read_text(), status=400)
    cap = OllamaCaptioner("llava:7b", PROMPTS, httpserver.url_for("/").rstrip("/"), retries=2, retry_wait=0)
    reasons = [o[2] for o in cap.caption_batch(images.iloc[:1])]
    assert reasons == ["captioning failed after 1 attempt(s): ollama error 400: invalid format: expected \"json\" or "
                       "a valid JSON schema"]
    httpserver.clear()
    httpserver.expect_request("/api/chat").respond_with_data((DATA / "error_500.json").read_text(), status=500)
    cap = OllamaCaptioner("llava:7b", PROMPTS, httpserver.url_for("/").rstrip("/"), retries=2, retry_wait=0)
    with pytest.raises(OllamaUnavailable, match=r"^caption: ollama at .* failed after 2 attempt\(s\) \(ollama error 500"):
        cap.caption_batch(images)
    assert len(httpserver.log) == 2    # the first image's two attempts; the other images were never sent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cap = OllamaCaptioner("llava:7b", PROMPTS, f"http://127.0.0.1:{port}", retries=1, retry_wait=0)
    with pytest.raises(OllamaUnavailable, match="unreachable.*`ollama serve`.*`ollama pull llava:7b`"):
        cap.caption_batch(images.iloc[:1])


def test_caption_stage_stops_on_a_failing_server_and_caches_no_dropped_images(httpserver, tmp_path, monkeypatch,
                                                                            capsys):
    from test_llm_taggers import show_reply

    calls = [0]

    def handler(request):
        calls[0] += 1
        if calls[0] > 8:   # 4 images of the first chunk, two prompts each; then the runner crashes
            return Response((DATA / "error_500.json").read_text(), status=500, content_type="application/json")
        return Response((DATA / "caption_good.json").read_text(), content_type="application/json")

    httpserver.expect_request("/api/chat", method="POST").respond_with_handler(handler)
    httpserver.expect_request("/api/show", method="POST").respond_with_json(show_reply(["completion", "vision"]))
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, caption={"backend": "ollama", "model": "llava:7b", "host": httpserver.url_for("/").rstrip("/"),
                                    "retry_wait": 0.0, "retries": 2, "batch_size": 1, "chunk_size": 4})
    run("ingest")
    with pytest.raises(OllamaUnavailable):
        run("caption")
    chunks = list(Path("data/work/caption").glob("chunk-*.parquet"))
    assert len(chunks) == 1 and pd.read_parquet(chunks[0])["kept"].all()   # only real captions were cached
    calls[0] = -100    # the server is back
    capsys.readouterr()
    run("caption")
    assert pd.read_parquet("data/captions.parquet")["kept"].all()
    assert "processed now / reused from data/work/caption: 6 / 4" in capsys.readouterr().out
