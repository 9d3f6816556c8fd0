"""LLM taggers (Appendix D): the real ollama client over real HTTP on 127.0.0.1, and a tiny local chat LLM."""

import json
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
from werkzeug import Response

from cocoins.backends.chat import OllamaUnavailable
from cocoins.backends.llm_taggers import (APPENDIX_D, SCHEMA, AnswerError, check_answer, ollama_tagger,
                                          parse_answer, tag_messages, transformers_tagger)
from cocoins.backends.taggers import validate_pair
from cocoins.runtime import UserError

DATA = Path(__file__).parent / "data" / "ollama"
C1 = "A photo of a young man with glasses and a smile."
C2 = "A young man with short black hair faces the viewer."
NO_PERSON = ("A bowl of fruit on a wooden table.", "Apples and pears in a bowl.")


@pytest.fixture(scope="session")
def httpserver_listen_address():
    return ("127.0.0.1", 0)


def recorded(name: str, status: int = 200) -> Response:
    return Response((DATA / name).read_text(), status=status, content_type="application/json")


def serve(httpserver, *replies):
    """Serve the recorded replies in order to POST /api/chat (the last one repeats)."""
    requests = []

    def handler(request):
        requests.append(json.loads(request.data))
        name, status = replies[min(len(requests) - 1, len(replies) - 1)]
        return recorded(name, status)

    httpserver.expect_request("/api/chat", method="POST").respond_with_handler(handler)
    return requests


def tagger(httpserver, fallback="rules", retries=3):
    return ollama_tagger(httpserver.url_for("/").rstrip("/"), "llama3.1:8b", retries=retries, fallback=fallback,
                         timeout=5, retry_wait=0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_instruction_is_appendix_d_and_request_is_structured(httpserver):
    assert APPENDIX_D.startswith("These are two captions of an image. Tag the words related to the subjects")
    assert "5. Pronouns: Do not tag pronouns." in APPENDIX_D and "<code>" not in APPENDIX_D
    requests = serve(httpserver, ("tag_good.json", 200))
    result = tagger(httpserver).tag(C1, C2)
    assert (result.backend, result.attempts, result.llm_error) == ("ollama", 1, "")
    assert result.tagged1 == "A photo of a young <subj1>man</subj1> with glasses and a smile."
    assert validate_pair(C1, C2, result) == ""
    (body,) = requests
    assert body["model"] == "llama3.1:8b" and body["format"] == SCHEMA and body["stream"] is False
    assert body["options"]["temperature"] == 0
    assert body["messages"] == tag_messages(C1, C2)
    content = body["messages"][0]["content"]
    assert content.startswith(APPENDIX_D) and json.loads(content[len(APPENDIX_D):]) == {"caption1": C1,
                                                                                        "caption2": C2}


@pytest.mark.parametrize("reply, status, error", [
    ("tag_malformed.json", 200, "answer is not JSON"),
    ("tag_changed.json", 200, "tagging changed the caption text"),
])
def test_bad_answers_are_retried_then_fall_back_or_fail(httpserver, reply, status, error):
    requests = serve(httpserver, (reply, status))
    result = tagger(httpserver).tag(C1, C2)
    assert len(requests) == 3 and result.attempts == 3
    assert result.backend == "rules" and not result.failed and error in result.llm_error
    assert result.tagged1 == "A photo of a young <subj1>man</subj1> with glasses and a smile."  # the rules' tags
    httpserver.clear()
    serve(httpserver, (reply, status))
    failed = tagger(httpserver, fallback="none").tag(C1, C2)
    assert failed.failed and failed.backend == "ollama" and (failed.tagged1, failed.tagged2) == (C1, C2)
    assert failed.llm_error.startswith("ollama tagging failed after 3 attempt(s): ") and error in failed.llm_error


def test_a_refused_request_is_that_rows_failure(httpserver):
    """A 4xx is the server's answer about this request: recorded per row (fallback), not retried, no stop."""
    requests = serve(httpserver, ("error_400.json", 400))
    result = tagger(httpserver).tag(C1, C2)
    assert len(requests) == 1 and (result.backend, result.attempts) == ("rules", 1)
    assert result.llm_error.startswith("ollama tagging failed after 1 attempt(s): ollama error 400: invalid format")


def test_retry_sends_the_bad_answer_back_with_the_reason(httpserver):
    requests = serve(httpserver, ("tag_changed.json", 200), ("tag_good.json", 200))
    result = tagger(httpserver).tag(C1, C2)
    assert (result.backend, result.attempts, result.llm_error) == ("ollama", 2, "")
    retry = requests[1]["messages"]
    assert len(retry) == 3 and retry[1]["role"] == "assistant" and "wearing glasses" in retry[1]["content"]
    assert "tagging changed the caption text" in retry[2]["content"]


def test_refused_connection_is_retried_with_a_wait_then_stops_with_the_fix():
    """A dead host is no bad answer: never the rule tagger, but one line naming the host and the fix."""
    host = f"http://127.0.0.1:{closed_port()}"
    t = ollama_tagger(host, "llama3.1:8b", retries=3, fallback="rules", timeout=5, retry_wait=0.05)
    slept = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cocoins.backends.chat.time.sleep", slept.append)
        with pytest.raises(OllamaUnavailable) as err:
            t.tag(C1, C2)
    assert slept == [0.05, 0.1]                      # retry_wait x attempt, between the three attempts
    message = str(err.value)
    assert message.startswith(f"tag: ollama at {host} failed after 3 attempt(s) (ollama unreachable")
    assert "`ollama serve`" in message and "`ollama pull llama3.1:8b`" in message and "\n" not in message
    with pytest.raises(OllamaUnavailable):           # later calls stop at once, without new attempts
        t.tag(C1, C2)


def test_a_server_error_is_retried_and_the_answer_used(httpserver):
    requests = serve(httpserver, ("error_500.json", 500), ("tag_good.json", 200))
    result = tagger(httpserver).tag(C1, C2)
    assert len(requests) == 2 and (result.backend, result.llm_error) == ("ollama", "")
    assert result.tagged1 == "A photo of a young <subj1>man</subj1> with glasses and a smile."


def test_a_model_that_is_not_pulled_stops_at_once(httpserver):
    httpserver.expect_request("/api/chat").respond_with_json({"error": "model 'llama3.1:8b' not found"}, status=404)
    with pytest.raises(OllamaUnavailable, match=r"after 1 attempt\(s\).*`ollama pull llama3.1:8b`"):
        tagger(httpserver).tag(C1, C2)


def test_no_subject_answer_is_final_not_retried(httpserver):
    requests = serve(httpserver, ("tag_no_subject.json", 200))
    result = tagger(httpserver).tag(*NO_PERSON)
    assert len(requests) == 1 and result.backend == "ollama" and result.llm_error == ""
    assert validate_pair(*NO_PERSON, result) == "no tagged subject"


def test_parse_answer():
    assert parse_answer('{"caption1": "a", "caption2": "b"}') == ("a", "b")
    assert parse_answer('Sure!\n```json\n{"caption1": "a", "caption2": "b"}\n```') == ("a", "b")
    for bad in ("", "[1, 2]", '{"caption1": "a"}', '{"caption1": 1, "caption2": "b"}', "{not json}"):
        with pytest.raises(AnswerError):
            parse_answer(bad)
    result, reason = check_answer("a man", "the man", '{"caption1": "a <subj1>man</subj1>", '
                                                      '"caption2": "the <subj2>man</subj2>"}', 1)
    assert result is None and reason.startswith("captions tag different subjects")


SCENARIOS = {  # caption1 -> (recorded reply, HTTP status)
    C1: ("tag_good.json", 200), NO_PERSON[0]: ("tag_no_subject.json", 200),
    "A man in a red coat reads a book.": ("tag_malformed.json", 200),
    "A woman waves from a boat.": ("tag_changed.json", 200), "A boy rides a bike.": ("tag_good.json", 200),
}


def stage_setup(tmp_path, monkeypatch, tag_params):
    """A project dir with params.yaml and a hand-made captions table: one row per scenario."""
    import yaml

    from test_data_stages import write_params

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["tag"] = {"retries": 2, "retry_wait": 0.0, "chunk_size": 2, **tag_params}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    Path("data").mkdir(exist_ok=True)
    first = list(SCENARIOS)
    pd.DataFrame({"image_id": ["good", "none", "malformed", "changed", "wrong"], "caption1": first,
                  "caption2": [C2, NO_PERSON[1], "The man turns a page.", "A woman on a boat.", "A boy on a bike."],
                  "backend": "x", "model": "x", "kept": True, "reason": ""}).to_parquet("data/captions.parquet")


def test_tag_stage_over_http_ends_every_row(httpserver, tmp_path, monkeypatch, capsys):
    """Stage with tag.backend ollama: good, malformed, changed, 500 and no-person rows all end in a row."""
    from test_data_stages import run

    def handler(request):
        return recorded(*SCENARIOS[json.loads(request.json["messages"][0]["content"][len(APPENDIX_D):])["caption1"]])

    httpserver.expect_request("/api/chat", method="POST").respond_with_handler(handler)
    serve_show(httpserver)
    host = httpserver.url_for("/").rstrip("/")
    stage_setup(tmp_path, monkeypatch, {"backend": "ollama", "host": host, "fallback": "rules"})
    run("tag")
    t = pd.read_parquet("data/tagged.parquet").set_index("image_id")
    assert list(t.index) == ["good", "none", "malformed", "changed", "wrong"]
    assert t.loc["good", ["backend", "attempts", "kept", "llm_error"]].tolist() == ["ollama", 1, True, ""]
    assert t.loc["none", ["backend", "kept", "reason"]].tolist() == ["ollama", False, "no tagged subject"]
    for name, error in (("malformed", "answer is not JSON"), ("changed", "tagging changed the caption text"),
                        ("wrong", "tagging changed the caption text")):   # another pair's answer
        assert t.loc[name, ["backend", "attempts", "kept"]].tolist() == ["rules", 2, True], name
        assert error in t.loc[name, "llm_error"] and "<subj1>" in t.loc[name, "tagged1"]
    out = capsys.readouterr().out
    assert "[tag] kept 4, skipped 1" in out and "LLM answers not used (see llm_error): 3" in out

    # fallback: none -> the three failures are skip rows with the LLM's reason (params changed: redone).
    stage_setup(tmp_path, monkeypatch, {"backend": "ollama", "host": host, "fallback": "none"})
    run("tag")
    t = pd.read_parquet("data/tagged.parquet").set_index("image_id")
    assert t["kept"].tolist() == [True, False, False, False, False]
    assert t.loc["wrong", "reason"].startswith("ollama tagging failed after 2 attempt(s): tagging changed")
    assert "processed now / reused from data/work/tag: 5 / 0" in capsys.readouterr().out


def show_reply(capabilities: list[str]) -> dict:
    """The body of ollama's POST /api/show (abridged: the fields the client reads), written by hand."""
    return {"modelfile": "FROM llama3.1:8b", "parameters": "", "template": "{{ .Prompt }}",
            "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
            "model_info": {"general.architecture": "llama"}, "capabilities": capabilities}


def serve_show(server, models=("llama3.1:8b",)):
    """POST /api/show as ollama answers it: the model's details for a pulled model, 404 for another."""
    def handler(request):
        if request.json["model"] in models:
            return Response(json.dumps(show_reply(["completion"])), content_type="application/json")
        return Response(json.dumps({"error": f"model '{request.json['model']}' not found"}), status=404,
                        content_type="application/json")

    server.expect_request("/api/show", method="POST").respond_with_handler(handler)


def test_tag_stage_with_no_server_fails_fast_and_caches_nothing(tmp_path, monkeypatch):
    from test_data_stages import run

    host = f"http://127.0.0.1:{closed_port()}"
    stage_setup(tmp_path, monkeypatch, {"backend": "ollama", "host": host, "retry_wait": 1.0})
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        run("tag")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert f"tag.host: no ollama server at {host}" in message and "`ollama serve`" in message
    assert "`ollama pull llama3.1:8b`" in message and message.count("\n") == 1   # "not ready, 1 problem(s):" + the line
    assert not Path("data/tagged.parquet").exists() and not list(Path("data/work/tag").glob("chunk-*"))


def test_a_server_failing_mid_run_stops_the_stage_and_a_rerun_retries(httpserver, tmp_path, monkeypatch, capsys):
    """Rows tagged before the server died stay cached; rows it failed are not cached (nor rule-tagged)."""
    from test_data_stages import run

    answered, alive = [0], [True]

    def handler(request):
        if answered[0] == 2 and alive[0]:
            alive[0] = False     # the runner dies after the first chunk's two answers
        if not alive[0]:
            return recorded("error_500.json", 500)
        answered[0] += 1
        captions = json.loads(request.json["messages"][0]["content"][len(APPENDIX_D):])
        tagged = {k: v.replace("man", "<subj1>man</subj1>") for k, v in captions.items()}
        body = {"model": "m", "created_at": "2026-11-02T10:15:07Z", "done": True,
                "message": {"role": "assistant", "content": json.dumps(tagged)}}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/api/chat", method="POST").respond_with_handler(handler)
    serve_show(httpserver)
    host = httpserver.url_for("/").rstrip("/")
    stage_setup(tmp_path, monkeypatch, {"backend": "ollama", "host": host, "batch_size": 1})
    with pytest.raises(OllamaUnavailable, match=r"tag: ollama at .* failed after 2 attempt\(s\) \(ollama error 500"):
        run("tag")
    chunks = list(Path("data/work/tag").glob("chunk-*.parquet"))
    assert len(chunks) == 1 and len(pd.read_parquet(chunks[0])) == 2   # chunk_size 2: the first chunk only
    assert not Path("data/tagged.parquet").exists()
    alive[0], answered[0] = True, 3     # the server is back
    capsys.readouterr()
    run("tag")
    t = pd.read_parquet("data/tagged.parquet")
    assert (t["backend"] == "ollama").all() and (t["llm_error"] == "").all()   # no row was rule-tagged
    assert "processed now / reused from data/work/tag: 3 / 2" in capsys.readouterr().out


def test_a_hung_server_costs_one_pair_of_timeouts(tmp_path, monkeypatch):
    """A server that takes requests and never answers: the stage stops after the first pair's retries."""
    import threading

    from pytest_httpserver import HTTPServer

    from test_data_stages import run

    chats, release = [], threading.Event()

    def hang(request):
        chats.append(1)
        release.wait(10)
        return recorded("tag_good.json")

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/api/chat").respond_with_handler(hang)
    serve_show(server)
    server.start()
    try:
        stage_setup(tmp_path, monkeypatch, {"backend": "ollama", "host": server.url_for("/").rstrip("/"),
                                            "timeout": 0.3, "batch_size": 1})
        start = time.monotonic()
        with pytest.raises(OllamaUnavailable, match=r"failed after 2 attempt\(s\) \(ollama request failed \(ReadTimeout"):
            run("tag")
        elapsed = time.monotonic() - start
    finally:
        release.set()
        server.stop()
    assert len(chats) == 2 and elapsed < 5   # 2 x 0.3 s, not 5 rows x 2 x 0.3 s
    assert not list(Path("data/work/tag").glob("chunk-*"))


def test_work_dir_is_redone_for_another_model_and_kept_for_another_host(tmp_path, monkeypatch, capsys):
    """`dvc repro -f tag` with another model must not reuse rows; the same model on another server may."""
    from pytest_httpserver import HTTPServer

    from test_data_stages import run

    def good(request):
        caption = json.loads(request.json["messages"][0]["content"][len(APPENDIX_D):])
        tagged = {k: v.replace("man", "<subj1>man</subj1>") for k, v in caption.items()}
        body = {"model": request.json["model"], "created_at": "2026-11-02T10:15:07Z", "done": True,
                "message": {"role": "assistant", "content": json.dumps(tagged)}}
        return Response(json.dumps(body), content_type="application/json")

    servers = [HTTPServer(host="127.0.0.1", port=0) for _ in range(2)]
    for server in servers:
        server.expect_request("/api/chat").respond_with_handler(good)
        serve_show(server, models=("llama3.1:8b", "qwen2.5:7b"))
        server.start()
    try:
        hosts = [server.url_for("/").rstrip("/") for server in servers]
        for host, model, expected in ((hosts[0], "llama3.1:8b", "5 / 0"), (hosts[1], "llama3.1:8b", "0 / 5"),
                                      (hosts[1], "qwen2.5:7b", "5 / 0")):
            stage_setup(tmp_path, monkeypatch, {"backend": "ollama", "host": host, "model": model})
            capsys.readouterr()
            run("tag")
            assert f"processed now / reused from data/work/tag: {expected}" in capsys.readouterr().out, (host, model)
    finally:
        for server in servers:
            server.stop()


def test_transformers_tagger_with_a_tiny_chat_model(tmp_path):
    """A random tiny Llama through AutoModelForCausalLM + chat template: garbage answers end in fallback."""
    import torch

    from cocoins.backends.tiny import build_tiny_chat_llm

    model_dir = build_tiny_chat_llm(tmp_path / "llm")
    t = transformers_tagger(str(model_dir), torch.device("cpu"), "bf16", retries=2, fallback="rules",
                            max_new_tokens=8)
    results = t.tag_batch([(C1, C2), NO_PERSON])
    assert [r.backend for r in results] == ["rules", "rules"] and all(r.attempts == 2 for r in results)
    assert all(r.llm_error.startswith("transformers tagging failed after 2 attempt(s): ") for r in results)
    assert results[0].tagged1 == "A photo of a young <subj1>man</subj1> with glasses and a smile."
    # The answer path: a model that answers correctly (generation replaced) is kept on the first attempt.
    good = json.loads(json.loads((DATA / "tag_good.json").read_text())["message"]["content"])
    t.answer_batch = lambda convs: [json.dumps(good)] * len(convs)
    (ok,) = t.tag_batch([(C1, C2)])
    assert (ok.backend, ok.attempts, ok.llm_error, ok.tagged2) == ("transformers", 1, "", good["caption2"])


def test_tag_stage_with_a_tiny_local_chat_model(tmp_path, monkeypatch, capsys):
    """tag.backend: transformers through the stage: garbage answers fall back to the rules, with the reason."""
    from cocoins.backends.tiny import build_tiny_chat_llm
    from test_data_stages import run

    model_dir = build_tiny_chat_llm(tmp_path / "llm")
    stage_setup(tmp_path, monkeypatch, {"backend": "transformers", "model": str(model_dir), "max_new_tokens": 4,
                                        "batch_size": 2, "device": "cpu", "retries": 1})
    run("tag")
    t = pd.read_parquet("data/tagged.parquet").set_index("image_id")
    assert (t["backend"] == "rules").all() and (t["attempts"] == 1).all()
    assert t["llm_error"].str.startswith("transformers tagging failed after 1 attempt(s): ").all()
    assert t["kept"].tolist() == [True, False, True, True, True]
    assert "tags by: {'rules': 5}" in capsys.readouterr().out


def test_ollama_requests_run_in_parallel_and_keep_their_order():
    """tag.batch_size requests in flight at once (a threaded server here, OLLAMA_NUM_PARALLEL in real life)."""
    import threading

    from pytest_httpserver import HTTPServer

    active, peak, lock = [0], [0], threading.Lock()
    # All 4 requests must be in the server at once to pass the barrier: a client sending fewer at a time
    # breaks it (timeout) and the requests fail, whatever the machine's speed.
    together = threading.Barrier(4, timeout=30)

    def handler(request):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        together.wait()
        with lock:
            active[0] -= 1
        caption = json.loads(request.json["messages"][0]["content"][len(APPENDIX_D):])["caption1"]
        tagged = caption.replace("man", "<subj1>man</subj1>")
        body = {"model": "m", "created_at": "2026-11-02T10:15:07Z", "done": True,
                "message": {"role": "assistant", "content": json.dumps({"caption1": tagged, "caption2": tagged})}}
        return Response(json.dumps(body), content_type="application/json")

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/api/chat").respond_with_handler(handler)
    server.start()
    try:
        t = ollama_tagger(server.url_for("/").rstrip("/"), "m", retries=1, fallback="none", parallel=4)
        pairs = [(f"a man number {k}", f"a man number {k}") for k in range(4)]
        results = t.tag_batch(pairs)
    finally:
        server.stop()
    assert peak[0] == 4
    assert [r.tagged1 for r in results] == [f"a <subj1>man</subj1> number {k}" for k in range(4)]
