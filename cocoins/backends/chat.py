"""Chat backends shared by the LLM tagger and the VLM captioner: ollama over HTTP, transformers locally.

`OllamaChat` wraps the official `ollama` client (`POST /api/chat`, non-streaming), with a JSON schema as
`format` when structured output is wanted, temperature 0, and bounded retries on transport errors: a refused
connection, a timeout, HTTP 5xx / 429 or a body that is not ollama's JSON each wait `retry_wait * attempt`
seconds before the next try (a server that is starting up or reloading a model needs the wait). Whatever
the server says about one request (any other 4xx) comes back as a `ChatFailure` for that row. For the data
stages (`stop_on_unavailable`), a server that stays unreachable, or does not know the model (404), raises
`OllamaUnavailable` naming the host and the fix: no row's result may depend on whether the server happened
to be up, so the stage stops (nothing of that chunk is cached) and a rerun retries. A hung server costs at
most `retries` x (`timeout` + wait) once, not per row: after the first request that exhausted its retries,
every later one on the same `OllamaChat` stops at once.

`load_causal_lm` / `generate_chat` run a local chat model (AutoModelForCausalLM + its chat template),
batched with left padding, greedy (temperature 0). `trust_remote_code` is never set.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from cocoins.runtime import UserError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ChatFailure:
    """Why the server refused one request (a 4xx about this request), after all its attempts."""
    reason: str
    attempts: int


class OllamaUnavailable(UserError):
    """The ollama server did not answer (down, hung, failing) or lacks the model: no row can be trusted."""


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """The params' dtype name as a torch dtype; CPU always computes in fp32 (fp16 matmuls are slow or missing)."""
    if name not in DTYPES:
        raise UserError(f"dtype {name!r} is not one of {sorted(DTYPES)}")
    return torch.float32 if device.type == "cpu" else DTYPES[name]


def unavailable_fix(host: str, model: str, option: str) -> str:
    """The fix for a server that does not answer, as the one line the stage ends with."""
    return (f"start the server (`ollama serve`) or set {option}.host to where it runs, and make sure the model is "
            f"pulled (`ollama pull {model}`)")


@dataclass
class OllamaChat:
    """One ollama model behind `host`; `chat(messages)` -> answer text or ChatFailure.

    `stop_on_unavailable` (the data stages): a server that did not answer after the retries, or lacks the
    model, raises OllamaUnavailable instead of returning a ChatFailure, and so does every later call at once.
    Without it (the prompts stage, which stops on any failure anyway) every failure is a ChatFailure.
    """
    host: str
    model: str
    timeout: float = 120.0
    retries: int = 3
    retry_wait: float = 1.0
    option: str = "tag"            # the params group, for the messages (tag.host, caption.host)
    stop_on_unavailable: bool = False
    _client: object = field(default=None, repr=False)
    _down: str = field(default="", repr=False)   # set once the server failed a request for good

    def client(self):
        if self._client is None:
            import ollama

            self._client = ollama.Client(host=self.host, timeout=self.timeout)
        return self._client

    def _unavailable(self, reason: str, attempts: int) -> ChatFailure:
        if self.stop_on_unavailable:
            self._down = (f"{self.option}: ollama at {self.host} failed after {attempts} attempt(s) ({reason}); "
                          + unavailable_fix(self.host, self.model, self.option))
            raise OllamaUnavailable(self._down)
        return ChatFailure(reason, attempts)

    def chat(self, messages: list[dict], schema: Optional[dict] = None) -> Union[str, ChatFailure]:
        import httpx
        import ollama

        if self._down:      # another request already found the server gone: do not wait out the timeouts again
            raise OllamaUnavailable(self._down)
        reason = ""
        for attempt in range(1, self.retries + 1):
            try:
                response = self.client().chat(model=self.model, messages=messages, format=schema,
                                              options={"temperature": 0}, stream=False)
                return response.message.content or ""
            except ConnectionError:
                reason = f"ollama unreachable at {self.host} (connection refused; is `ollama serve` running?)"
            except ollama.ResponseError as err:
                reason = f"ollama error {err.status_code}: {str(err.error)[:120]}"
                if err.status_code == 404:      # unknown model: retrying cannot help, and no row can succeed
                    return self._unavailable(f"{reason} (run `ollama pull {self.model}`)", attempt)
                if err.status_code < 500 and err.status_code != 429:   # about this request: the row's failure
                    return ChatFailure(reason, attempt)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                reason = f"ollama request failed ({type(err).__name__}, timeout {self.timeout:g} s)"
            except ValueError as err:           # the body was not the JSON the client expects: not ollama?
                reason = f"ollama sent an unreadable response ({str(err)[:80]})"
            if self._down:
                raise OllamaUnavailable(self._down)
            if attempt < self.retries:
                time.sleep(self.retry_wait * attempt)
        return self._unavailable(reason, self.retries)


def in_parallel(fn, items: list, workers: int) -> list:
    """fn over items with up to `workers` threads (HTTP requests to one server), results in input order.

    The first exception stops the rest: requests not yet started are cancelled, then it is raised.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(fn, x) for x in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def image_message(prompt: str, jpeg: bytes) -> dict:
    """A user message carrying one image for a vision model (ollama sends images base64-encoded)."""
    return {"role": "user", "content": prompt, "images": [base64.b64encode(jpeg).decode("ascii")]}


def load_pretrained(model_cls, processor_cls, model: str, device: torch.device, dtype: str, param: str,
                    **processor_kwargs):
    """(processor, eval model) from a hub id or local dir, or a UserError naming the param to fix."""
    try:
        processor = processor_cls.from_pretrained(model, **processor_kwargs)
        net = model_cls.from_pretrained(model, dtype=torch_dtype(dtype, device)).to(device).eval()
    except OSError as err:
        raise UserError(f"cannot load {model!r} ({str(err)[:160]}); set {param} to a local model dir or a hub id "
                        "in the offline cache (HF_HOME)") from None
    return processor, net


def load_causal_lm(model: str, device: torch.device, dtype: str, param: str = "tag.model"):
    """(tokenizer, model) from a hub id or local dir; the tokenizer must have a chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, lm = load_pretrained(AutoModelForCausalLM, AutoTokenizer, model, device, dtype, param,
                                    padding_side="left")
    if not tokenizer.chat_template:
        raise UserError(f"{model} has no chat template; use an instruction-tuned (chat) model for {param}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, lm


@torch.no_grad()
def generate_chat(tokenizer, lm, conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Greedy answers to a batch of conversations (left-padded, one generate call)."""
    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
    out = lm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                      pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
