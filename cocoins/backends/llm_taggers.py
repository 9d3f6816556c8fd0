"""LLM subject taggers with the paper's instruction (Appendix D): `ollama` and local `transformers` chat models.

The instruction is Appendix D's, verbatim (the paper's text extraction wraps the tags in <code> markup and
turns the list into "- 1."; both are undone here, nothing else is changed). The paper does not say how
the captions are appended; we append them as the JSON object the answer must mirror.

Every answer is checked with `validate_pair` (tags removed must give the caption back exactly, tags
well-formed and indexed, both captions tag the same subjects). A bad answer is retried, with the model's
answer and what was wrong with it added to the conversation (at temperature 0 a plain retry would give
the same answer back); transport errors are retried by the chat backend. An answer that tags nothing is
a valid answer (rule 3) and is not retried: the stage records "no tagged subject". After `retries`
attempts the row falls back to the rule tagger (`tag.fallback: rules`, the LLM's failure is kept in
`llm_error`) or is recorded as a failure (`tag.fallback: none`). Only answers, and a server's refusal of
one request, reach the fallback: a server that does not answer raises `OllamaUnavailable` (chat.py) and
stops the stage, since rule tags in place of an LLM that was merely down would be kept and cached for good.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from cocoins.backends.chat import ChatFailure, OllamaChat, generate_chat, in_parallel, load_causal_lm
from cocoins.backends.taggers import RuleTagger, TagResult, validate_pair

APPENDIX_D = """These are two captions of an image. Tag the words related to the subjects of the captions. \
Return the captions in a JSON with keys "caption1" and "caption2".

1. Identify words related to a person: Look for specific nouns or noun phrases that refer to a person. \
Exclude pronouns (e.g., "he", "she", "they", "it") and collective nouns (e.g., "people") from tagging.
2. Tag these words: Surround each identified word or noun phrase with <subj> and </subj> tags. Use <subj1>, \
<subj2>, etc., for different items. Apply the same index number to all references to the same item.
3. If no relevant words are found: Return the original captions without any changes.
4. Handling ambiguity: If a word has ambiguous references or unclear roles, do not tag it.
5. Pronouns: Do not tag pronouns."""

# Structured output: ollama constrains decoding to this JSON schema.
SCHEMA = {"type": "object", "properties": {"caption1": {"type": "string"}, "caption2": {"type": "string"}},
          "required": ["caption1", "caption2"]}
NO_SUBJECT = "no tagged subject"


class AnswerError(ValueError):
    """The model's answer is not the JSON object with two string captions."""


def tag_messages(caption1: str, caption2: str) -> list[dict]:
    """The conversation for one caption pair: Appendix D's instruction, then the captions as JSON."""
    captions = json.dumps({"caption1": caption1, "caption2": caption2}, ensure_ascii=False)
    return [{"role": "user", "content": f"{APPENDIX_D}\n\n{captions}"}]


def correction(answer: str, reason: str) -> list[dict]:
    """Messages appended after a bad answer, so the retry knows what to fix."""
    return [{"role": "assistant", "content": answer},
            {"role": "user", "content": f"That answer cannot be used: {reason}. Return both captions exactly "
                                        "as given, character for character, only adding the <subjN> tags, as "
                                        "JSON with keys \"caption1\" and \"caption2\"."}]


def parse_answer(answer: str) -> tuple[str, str]:
    """(tagged1, tagged2) from the model's answer; the JSON object may be wrapped in prose or a code fence."""
    text = answer.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        found = re.search(r"\{.*\}", text, re.DOTALL)
        try:
            data = json.loads(found.group()) if found else None
        except json.JSONDecodeError:
            data = None
        if data is None:
            raise AnswerError(f"answer is not JSON ({text[:60]!r})") from None
    if not isinstance(data, dict):
        raise AnswerError(f"answer is JSON but not an object ({type(data).__name__})")
    values = [data.get("caption1"), data.get("caption2")]
    if not all(isinstance(v, str) for v in values):
        raise AnswerError(f"answer lacks string keys caption1 and caption2 (keys: {sorted(data)[:4]})")
    return values[0], values[1]


def check_answer(caption1: str, caption2: str, answer: str, attempt: int) -> tuple[Optional[TagResult], str]:
    """(result, "") for a usable answer (also one tagging nothing), else (None, why it is unusable)."""
    try:
        tagged1, tagged2 = parse_answer(answer)
    except AnswerError as err:
        return None, str(err)
    result = TagResult(tagged1, tagged2, attempts=attempt)
    reason = validate_pair(caption1, caption2, result)
    return (result, "") if reason in ("", NO_SUBJECT) else (None, reason)


@dataclass
class LLMTagger:
    """Appendix D tagging through `answer_batch(conversations) -> [answer text | ChatFailure]`."""
    backend: str
    model: str
    answer_batch: Callable[[list[list[dict]]], list[Union[str, ChatFailure]]]
    retries: int = 3
    fallback: str = "rules"
    _rules: RuleTagger = field(default_factory=RuleTagger, repr=False)

    def tag(self, caption1: str, caption2: str) -> TagResult:
        return self.tag_batch([(caption1, caption2)])[0]

    def tag_batch(self, pairs: list[tuple[str, str]]) -> list[TagResult]:
        results: list[Optional[TagResult]] = [None] * len(pairs)
        reasons = [""] * len(pairs)
        attempts = [0] * len(pairs)
        conversations = {k: tag_messages(c1, c2) for k, (c1, c2) in enumerate(pairs)}
        for _ in range(self.retries):
            if not conversations:
                break
            keys = sorted(conversations)
            answers = self.answer_batch([conversations[k] for k in keys])
            for k, answer in zip(keys, answers):
                if isinstance(answer, ChatFailure):   # the server refused this request (transport errors raise)
                    attempts[k] += answer.attempts
                    reasons[k] = answer.reason
                    del conversations[k]
                    continue
                attempts[k] += 1
                result, reason = check_answer(*pairs[k], answer, attempts[k])
                if result is not None:
                    results[k] = TagResult(result.tagged1, result.tagged2, attempts[k], backend=self.backend)
                    del conversations[k]
                else:
                    reasons[k] = reason
                    conversations[k] = conversations[k] + correction(answer, reason)
        return [r if r is not None else self._failed(pairs[k], attempts[k], reasons[k])
                for k, r in enumerate(results)]

    def _failed(self, pair: tuple[str, str], attempts: int, reason: str) -> TagResult:
        error = f"{self.backend} tagging failed after {attempts} attempt(s): {reason}"
        if self.fallback == "rules":
            rules = self._rules.tag(*pair)
            return TagResult(rules.tagged1, rules.tagged2, attempts, backend="rules", llm_error=error)
        return TagResult(pair[0], pair[1], attempts, backend=self.backend, llm_error=error, failed=True)


def ollama_tagger(host: str, model: str, retries: int, fallback: str, timeout: float = 60.0,
                  retry_wait: float = 1.0, parallel: int = 1) -> LLMTagger:
    """Appendix D through an ollama server: JSON-schema structured output, temperature 0.

    `parallel` requests are in flight at once (the server answers that many with OLLAMA_NUM_PARALLEL).
    """
    chat = OllamaChat(host=host, model=model, timeout=timeout, retries=retries, retry_wait=retry_wait, option="tag",
                      stop_on_unavailable=True)
    return LLMTagger("ollama", model, lambda convs: in_parallel(lambda c: chat.chat(c, schema=SCHEMA), convs, parallel),
                     retries=retries, fallback=fallback)


def transformers_tagger(model: str, device, dtype: str, retries: int, fallback: str,
                        max_new_tokens: int = 256) -> LLMTagger:
    """Appendix D through a local chat model (AutoModelForCausalLM + chat template), batched, greedy."""
    tokenizer, lm = load_causal_lm(model, device, dtype)
    return LLMTagger("transformers", model, lambda convs: generate_chat(tokenizer, lm, convs, max_new_tokens),
                     retries=retries, fallback=fallback)
