"""Subject taggers: captions in, captions with `<subjN>...</subjN>` around person nouns out (Appendix D).

The paper asks an LLM to tag "words related to a person" with these rules: tag nouns / noun phrases
that refer to a person; never pronouns ("he", "she", "they") or collective nouns ("people"); the same
index for every reference to the same person, different indices for different people; leave ambiguous
words untagged. `RuleTagger` applies the same rules offline with a vocabulary of person nouns.

Span choice: only the head noun is tagged ("a young <subj1>man</subj1>"), not the whole noun phrase.
CoCoIns inserts the pseudo-word right before the tagged span (Eq. 4), so "young [w] man" keeps the
adjectives describing the person and puts the instance token next to the concept it instantiates.

Coreference, simply: an indefinite mention ("a man", "another woman") is a new person; a definite or
bare mention ("the man", "man") is the earlier person with the same noun, if any; a generic definite
mention ("the person") is the only person mentioned so far, and is left untagged when there are several.

Every tagger's answer goes through `validate_pair`: removing the tags must give back the caption exactly,
and both captions must tag the same subjects. `make_tagger` (tagger_factory.py) picks the tagger.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from cocoins.data.tags import TagError, parse_tagged

# Singular nouns that name one person. Words that often mean something else ("model", "player",
# "driver", "figure", "subject") are left out on purpose: rule 4, do not tag when ambiguous.
PERSON_NOUNS = frozenset("""
man woman boy girl person lady gentleman guy gal child kid teenager teen adult individual baby toddler
infant grandmother grandfather grandma grandpa mother father mom dad mum son daughter brother sister
husband wife bride groom businessman businesswoman policeman policewoman actor actress athlete chef
doctor nurse teacher student musician singer dancer artist worker soldier officer farmer runner cyclist
surfer hiker traveler tourist scientist engineer photographer firefighter pilot customer king queen
prince princess celebrity
""".split())
GENERIC = frozenset({"person", "individual", "adult"})
INDEFINITE = frozenset({"a", "an", "one", "some", "any"})
NEW_PERSON = frozenset({"another", "other", "second", "third"})
DEFINITE = frozenset({"the", "this", "that", "same"})
# Words that end the look-back for a determiner: the determiner of a noun sits before its adjectives,
# never beyond a conjunction, preposition or verb.
STOP = frozenset({"and", "or", "but", "with", "of", "in", "on", "at", "by", "for", "to", "from", "is",
                  "are", "was", "has", "have", "while", "next", "beside", "behind", "near"})
_WORD = re.compile(r"[A-Za-z]+")
LOOKBACK = 4


@dataclass(frozen=True)
class TagResult:
    tagged1: str
    tagged2: str
    attempts: int
    backend: str = ""       # who produced these tags ("rules" when an LLM answer fell back to the rules)
    llm_error: str = ""     # why the LLM's answers were not used ("" when they were, or no LLM was asked)
    failed: bool = False    # no usable tags at all (LLM failed, tag.fallback: none); llm_error says why


class Tagger(Protocol):
    backend: str

    def tag_batch(self, pairs: list[tuple[str, str]]) -> list[TagResult]: ...


def _determiner(words: list[str], k: int) -> str:
    """The determiner-like word governing words[k] ("" if none), skipping adjectives before it."""
    for j in range(k - 1, max(k - 1 - LOOKBACK, -1), -1):
        w = words[j]
        if w in INDEFINITE or w in NEW_PERSON or w in DEFINITE:
            return w
        if w in STOP:
            return ""
    return ""


def rule_tag(text: str) -> str:
    """Tag the person nouns of one caption (see the module docstring for the rules)."""
    matches = [m for m in _WORD.finditer(text)
               # "man-made", "snow-woman": part of a hyphenated word, not a person.
               if not (m.start() > 0 and text[m.start() - 1] == "-") and not text[m.end():m.end() + 1] == "-"]
    words = [m.group().lower() for m in matches]
    mentions: list[tuple[int, str]] = []  # (subject index, noun), in order
    spans: list[tuple[int, int, int]] = []
    for k, (m, word) in enumerate(zip(matches, words)):
        if word not in PERSON_NOUNS:
            continue
        det = _determiner(words, k)
        known = sorted({i for i, _ in mentions})
        if det in INDEFINITE or det in NEW_PERSON:
            index = len(known) + 1
        else:
            same = [i for i, noun in mentions if noun == word]
            if same:
                index = same[-1]
            elif word in GENERIC and det in DEFINITE and known:
                if len(known) > 1:
                    continue  # "the person" among several people: ambiguous, rule 4
                index = known[0]
            else:
                index = len(known) + 1
        mentions.append((index, word))
        spans.append((m.start(), m.end(), index))
    out, cursor = [], 0
    for start, end, index in spans:
        out.append(f"{text[cursor:start]}<subj{index}>{text[start:end]}</subj{index}>")
        cursor = end
    return "".join(out) + text[cursor:]


def validate(caption: str, tagged: str) -> str:
    """Reason the tagged caption is unusable, or "" if it is good."""
    try:
        parsed = parse_tagged(tagged)
    except TagError as err:
        return f"malformed tags ({err})"
    if parsed.plain != caption:
        return "tagging changed the caption text"
    if not parsed.spans:
        return "no tagged subject"
    return ""


def validate_pair(caption1: str, caption2: str, result: TagResult) -> str:
    """Reason a tagged caption pair is unusable, or "" if both are good and tag the same subjects."""
    for caption, tagged in ((caption1, result.tagged1), (caption2, result.tagged2)):
        reason = validate(caption, tagged)
        if reason:
            return reason
    s1 = sorted(parse_tagged(result.tagged1).subject_indices)
    s2 = sorted(parse_tagged(result.tagged2).subject_indices)
    if s1 != s2:
        return f"captions tag different subjects ({s1} vs {s2})"
    return ""


@dataclass
class RuleTagger:
    """Offline rule-based tagger (Appendix D rules, person-noun vocabulary)."""
    backend: str = "rules"

    def tag(self, caption1: str, caption2: str) -> TagResult:
        return TagResult(rule_tag(caption1), rule_tag(caption2), attempts=1, backend=self.backend)

    def tag_batch(self, pairs: list[tuple[str, str]]) -> list[TagResult]:
        return [self.tag(c1, c2) for c1, c2 in pairs]
