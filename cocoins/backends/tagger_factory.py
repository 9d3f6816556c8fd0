"""The tagger the `tag` params group asks for: the offline rules or an LLM (llm_taggers.py).

Lives apart from taggers.py so the dependency runs one way: llm_taggers builds on taggers (rules,
validation), and this module picks between them.
"""

from __future__ import annotations

from cocoins.backends.taggers import RuleTagger, Tagger
from cocoins.runtime import UserError


def make_tagger(p, device=None) -> Tagger:
    """The tagger for the `tag` params group (`TagParams`)."""
    if p.backend == "rules":
        return RuleTagger()
    from cocoins.backends import llm_taggers  # imported late: the offline default needs no LLM client

    if p.backend == "ollama":
        return llm_taggers.ollama_tagger(p.host, p.model, p.retries, p.fallback, p.timeout, p.retry_wait,
                                         parallel=p.batch_size)
    if p.backend == "transformers":
        return llm_taggers.transformers_tagger(p.model, device, p.dtype, p.retries, p.fallback, p.max_new_tokens)
    raise UserError(f"unknown tag.backend {p.backend!r}; use rules, ollama or transformers")
