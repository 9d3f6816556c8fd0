"""Chat backends shared by the LLM tagger and the VLM captioner: ollama over HTTP, transformers locally.

`OllamaChat` wraps the official `ollama` client (`POST /api/chat`, non-streaming), with a JSON schema as
`format` when structured output is wanted, temperature 0, and bounded retries on transport errors
(HTTP 5xx / 429 and timeouts wait `retry_wait * attempt` seconds first; a refused connection is retried
at once, since it costs nothing). It returns either the answer text or a `ChatFailure` with the reason,
never raises for a bad server, so a stage never dies on one row.

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
    """Why a chat call gave no answer (transport error, server error), after all its attempts."""
    reason: str
    attempts: int


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """The params' dtype name as a torch dtype; CPU always computes in fp32 (fp16 matmuls are slow or missing)."""
    if name not in DTYPES:
        raise UserError(f"dtype {name!r} is not one of {sorted(DTYPES)}")
    return torch.float32 if device.type == "cpu" else DTYPES[name]


@dataclass
class OllamaChat:
    """One ollama model behind `host`; `chat(messages)` -> answer text or ChatFailure."""
    host: str
    model: str
    timeout: float = 120.0
    retries: int = 3
    retry_wait: float = 1.0
    _client: object = field(default=None, repr=False)

    def client(self):
        if self._client is None:
            import ollama

            self._client = ollama.Client(host=self.host, timeout=self.timeout)
        return self._client

    def chat(self, messages: list[dict], schema: Optional[dict] = None) -> Union[str, ChatFailure]:
        import httpx
        import ollama

        reason = ""
        for attempt in range(1, self.retries + 1):
            try:
                response = self.client().chat(model=self.model, messages=messages, format=schema,
                                              options={"temperature": 0}, stream=False)
                return response.message.content or ""
            except ConnectionError:
                reason = f"ollama unreachable at {self.host} (connection refused; is `ollama serve` running?)"
                continue
            except ollama.ResponseError as err:
                reason = f"ollama error {err.status_code}: {str(err.error)[:120]}"
                if err.status_code == 404:      # unknown model: retrying cannot help
                    reason += f" (run `ollama pull {self.model}`)"
                    return ChatFailure(reason, attempt)
                if err.status_code < 500 and err.status_code != 429:
                    return ChatFailure(reason, attempt)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                reason = f"ollama request failed ({type(err).__name__})"
            except ValueError as err:           # the body was not the JSON the client expects
                reason = f"ollama sent an unreadable response ({str(err)[:80]})"
            if attempt < self.retries:
                time.sleep(self.retry_wait * attempt)
        return ChatFailure(reason, self.retries)


def in_parallel(fn, items: list, workers: int) -> list:
    """fn over items with up to `workers` threads (HTTP requests to one server), results in input order."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


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
