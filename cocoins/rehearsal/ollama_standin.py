"""A stand-in ollama server on loopback for the rehearsal: the real client, real HTTP, answers by rule.

No ollama can be installed or reached where the rehearsal runs, and an LLM with random weights cannot
answer Appendix D's JSON. This server speaks the part of ollama's API the pipeline uses (`POST /api/show`,
`POST /api/chat` with a JSON-schema `format`) and answers as a well-behaved model would in shape:
- tagging (schema with caption1 / caption2): each caption back unchanged with its first word wrapped in
  <subj1>...</subj1>, so the tag stage's validation passes on whatever the random captioner wrote;
- scenes (schema with scenes): `count` one-sentence scenes naming the subject of the conversation.
It checks plumbing (the client, the schema, retries, the stages' handling), not the quality of any answer.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_FIRST_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
# A named subject, not the blank "<subj1> </subj1>" of the instruction's tagging rule.
_SUBJECT = re.compile(r"<subj1>\s*([^<\s][^<]*?)\s*</subj1>")


def tag_first_word(caption: str) -> str:
    """The caption with its first word tagged as subject 1; unchanged if it has no word."""
    found = _FIRST_WORD.search(caption)
    if found is None:
        return caption
    return f"{caption[:found.start()]}<subj1>{found.group()}</subj1>{caption[found.end():]}"


def answer(body: dict, scenes_per_turn: int) -> str:
    """The assistant's content for one /api/chat request."""
    properties = (body.get("format") or {}).get("properties", {})
    messages = body.get("messages") or []
    if "caption1" in properties:
        text = messages[-1]["content"]
        captions = json.loads(text.rsplit("\n", 1)[-1])   # tag_messages ends with the captions as one JSON line
        return json.dumps({"caption1": tag_first_word(captions["caption1"]),
                           "caption2": tag_first_word(captions["caption2"])})
    if "scenes" in properties:
        subject = next((m.group(1) for msg in messages if msg.get("role") == "user"
                        for m in [_SUBJECT.search(msg.get("content", ""))] if m), "person")
        turn = sum(1 for msg in messages if msg.get("role") == "user")
        return json.dumps({"scenes": [f"A <subj1>{subject}</subj1> in rehearsal scene {turn}.{k}."
                                      for k in range(scenes_per_turn)]})
    return "ok"


class OllamaStandIn:
    """`with OllamaStandIn(model, scenes_per_turn) as server:` serves on `server.host` until the block ends
    (on `port`; 0: a free one)."""

    def __init__(self, model: str, scenes_per_turn: int = 2, port: int = 0):
        self.model, self.scenes_per_turn, self.requests = model, scenes_per_turn, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # quiet: the stages print what they did
                pass

            def _reply(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests += 1
                if body.get("model") != outer.model:
                    self._reply(404, {"error": f"model '{body.get('model')}' not found"})
                elif self.path == "/api/show":
                    self._reply(200, {"modelfile": "", "parameters": "", "template": "",
                                      "details": {"family": "rehearsal", "parameter_size": "0"}})
                elif self.path == "/api/chat":
                    self._reply(200, {"model": outer.model, "created_at": "2026-01-01T00:00:00Z",
                                      "message": {"role": "assistant", "content": answer(body, outer.scenes_per_turn)},
                                      "done": True, "done_reason": "stop"})
                else:
                    self._reply(404, {"error": f"no route {self.path}"})

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.host = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "OllamaStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
