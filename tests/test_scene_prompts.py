"""Scenes prompts from Appendix D through the real ollama client, over real HTTP on 127.0.0.1 (recorded replies)."""

import importlib.util
import json
import socket
from pathlib import Path

import pandas as pd
import pytest
import yaml
from werkzeug import Response

from cocoins.data.tags import parse_tagged
from cocoins.eval.prompt_sets import SETTINGS, builtin_scene_prompts
from cocoins.eval.scene_prompts import (FOLLOW_UPS, SCENES_SCHEMA, SceneGenerationError, count_sentences,
                                        first_instruction, ollama_scene_prompts, scene_problem)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "ollama_scenes"
CONVERSATION = ["scenes_daily.json", "scenes_professional.json", "scenes_cultural.json", "scenes_outdoor.json"]
PAPER_FIRST_LINE = "Generate fifty scene descriptions of a man in daily life."


@pytest.fixture(scope="session")
def httpserver_listen_address():
    return ("127.0.0.1", 0)


def serve(httpserver, *replies):
    """Serve (file, status) replies in order to POST /api/chat (the last one repeats); returns the request bodies."""
    requests = []

    def handler(request):
        requests.append(json.loads(request.data))
        name, status = replies[min(len(requests) - 1, len(replies) - 1)]
        return Response((DATA / name).read_text(), status=status, content_type="application/json")

    httpserver.expect_request("/api/chat", method="POST").respond_with_handler(handler)
    return requests


def host(httpserver) -> str:
    return httpserver.url_for("/").rstrip("/")


def generate(url: str, count: int = 2, retries: int = 3, subjects=("woman",)):
    return ollama_scene_prompts(subjects, count, url, "llama3.1:8b", timeout=5, retries=retries, retry_wait=0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_instruction_is_appendix_d_with_subject_and_count():
    paper = first_instruction("man", 50)
    assert paper.startswith(PAPER_FIRST_LINE + "\n\n1. Focus on the subject\n- The subject should always be a \"man\".")
    assert 'For example, "a <subj1>man</subj1> stands in the room"' in paper
    assert paper.endswith("5. Length: No more than three sentences.") and "- 1." not in paper
    woman = first_instruction("woman", 2)
    assert woman.startswith("Generate two scene descriptions of a woman in daily life.")
    assert woman.replace("woman", "man").replace("two", "fifty", 1) == paper
    assert first_instruction("elderly person", 50).startswith("Generate fifty scene descriptions of an elderly person")
    assert set(FOLLOW_UPS) == set(SETTINGS[1:])


def test_scene_checks():
    assert scene_problem("A <subj1>man</subj1> runs.") == ""
    assert scene_problem("A man runs.") == "no <subj1> span"
    assert scene_problem("A <subj2>man</subj2> runs.") == "no <subj1> span"
    assert scene_problem("A <subj1>man runs.") == "malformed subject tags"
    assert scene_problem(7) == scene_problem("  ") == "not a non-empty string"
    assert scene_problem("A <subj1>man</subj1> runs. He stops! \"Why?\" he asks. Then he sits.") == \
        "more than 3 sentences"
    assert count_sentences("One. Two! Three? ") == 3 and count_sentences("No stop at the end") == 1


def test_multi_turn_conversation(httpserver):
    requests = serve(httpserver, *[(name, 200) for name in CONVERSATION])
    result = generate(host(httpserver))
    assert len(requests) == 4
    for body in requests:
        assert body["model"] == "llama3.1:8b" and body["format"] == SCENES_SCHEMA and body["stream"] is False
        assert body["options"]["temperature"] == 0
    # One chat: each turn resends the history with the model's earlier answers, then the next instruction.
    last = requests[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant"] * 3 + ["user"]
    assert last[0]["content"] == first_instruction("woman", 2)
    assert last[0]["content"].startswith("Generate two scene descriptions of a woman in daily life.\n\n1. Focus")
    assert [m["content"] for m in last[2::2]] == [FOLLOW_UPS[s].format(count=2) for s in SETTINGS[1:]]
    assert last[2]["content"].startswith("Now generate 2 more samples with scenes related to technical or professional")
    assert last[6]["content"].startswith("Now generate 2 more samples with scenes related to outdoor activities")
    for k, name in enumerate(CONVERSATION[:3]):
        assert last[2 * k + 1]["content"] == json.loads((DATA / name).read_text())["message"]["content"]
        assert requests[k]["messages"] == last[:2 * k + 1]

    scenes = result.scenes
    assert list(scenes.columns) == list(builtin_scene_prompts(("woman",), 1).columns) + ["backend", "model"]
    assert scenes.groupby("setting", sort=False).size().to_dict() == {s: 2 for s in SETTINGS}
    assert scenes.prompt_id.is_unique and set(scenes.subject) == {"woman"}
    assert set(scenes.backend) == {"ollama"} and set(scenes.model) == {"llama3.1:8b"}
    assert scenes.prompt_id.iloc[0] == "scene-woman-daily_life-0"
    assert all(parse_tagged(t).spans[0].index == 1 for t in scenes.tagged)
    assert dict(result.dropped) == {"no <subj1> span": 1, "more than 3 sentences": 1,
                                    "beyond prompts.scenes_per_setting": 1}


def test_item_without_tags_is_dropped_with_reason(httpserver):
    serve(httpserver, *[(name, 200) for name in CONVERSATION])
    result = generate(host(httpserver))
    daily = result.scenes[result.scenes.setting == "daily life"].tagged.tolist()
    assert not any("waits at a rainy bus stop" in t for t in daily) and len(daily) == 2
    assert result.dropped["no <subj1> span"] == 1


def test_malformed_json_is_retried_with_a_correction(httpserver):
    requests = serve(httpserver, ("scenes_malformed.json", 200), *[(name, 200) for name in CONVERSATION])
    result = generate(host(httpserver))
    assert len(requests) == 5 and len(result.scenes) == 8
    retry = requests[1]["messages"]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert retry[2]["content"].startswith("That answer cannot be used: answer is not JSON")
    # The later turns carry the good answer only, not the failed attempt.
    assert requests[2]["messages"][1]["content"] == json.loads((DATA / CONVERSATION[0]).read_text())["message"][
        "content"] and len(requests[2]["messages"]) == 3


@pytest.mark.parametrize("reply, status, expected", [
    ("scenes_malformed.json", 200, ["answer is not JSON", "after 2 attempt(s)"]),
    ("error_500.json", 500, ["ollama error 500: llama runner process has terminated", "after 2 attempt(s)",
                             "ollama pull llama3.1:8b", "prompts.backend: builtin"]),
])
def test_failing_turn_is_retried_then_stops_with_the_fix(httpserver, reply, status, expected):
    requests = serve(httpserver, (reply, status))
    with pytest.raises(SceneGenerationError) as err:
        generate(host(httpserver), retries=2)
    assert len(requests) == 2
    message = str(err.value)
    assert "'woman' (daily life)" in message and "llama3.1:8b" in message and host(httpserver) in message
    assert all(part in message for part in expected) and "\n" not in message


def test_refused_connection_stops_with_the_fix():
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(SceneGenerationError) as err:
        generate(url, retries=2)
    message = str(err.value)
    assert f"ollama unreachable at {url}" in message and "after 2 attempt(s)" in message
    assert "ollama serve" in message and "\n" not in message


def test_no_usable_scene_in_a_setting_stops(httpserver):
    serve(httpserver, ("scenes_outdoor.json", 200))
    with pytest.raises(SceneGenerationError, match="no usable scene"):
        # scenes_outdoor.json twice in a row: the second answer only repeats the first (duplicates).
        generate(host(httpserver))


def run_prompts_stage(tmp_path, monkeypatch, prompts: dict):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prompts"].update(prompts)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("stage_prompts_scenes", ROOT / "stages" / "prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from cocoins.runtime import run_stage

    run_stage(module.main)


def test_stage_writes_the_ollama_scenes(httpserver, tmp_path, monkeypatch):
    serve(httpserver, *[(name, 200) for name in CONVERSATION])
    run_prompts_stage(tmp_path, monkeypatch, {"backend": "ollama", "subjects": ["woman"], "scenes_per_setting": 2,
                                              "host": host(httpserver), "timeout": 5})
    scenes = pd.read_parquet(tmp_path / "data" / "eval" / "scenes.parquet")
    assert len(scenes) == 8 and set(scenes.setting) == set(SETTINGS) and set(scenes.backend) == {"ollama"}
    report = json.loads((tmp_path / "data" / "eval" / "scenes_dropped.json").read_text())
    assert report["model"] == "llama3.1:8b" and sum(report["dropped"].values()) == 3


def test_stage_refused_connection_is_one_line_without_traceback(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(SystemExit) as exit_:
        run_prompts_stage(tmp_path, monkeypatch, {"backend": "ollama", "host": url, "retries": 1})
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ollama scene generation for 'man' (daily life) failed") and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "data" / "eval" / "scenes.parquet").exists()
