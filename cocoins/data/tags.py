"""Parser for subject-tagged prompts: "a <subj1>man</subj1> reading" -> plain text + subject spans.

The tag format is the one of the paper's Appendix D: `<subjN>...</subjN>` around a word or noun phrase,
the same N for every reference to the same subject. Spans are character offsets into the plain text
(tags removed), which is what tokenizers see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TAG = re.compile(r"<(/?)subj(\d+)>")


class TagError(ValueError):
    """A tagged string that is not well formed: unbalanced, nested, empty or unindexed tags."""


@dataclass(frozen=True)
class SubjectSpan:
    index: int   # N of <subjN>
    start: int   # character offset in the plain text, inclusive
    end: int     # exclusive
    text: str


@dataclass(frozen=True)
class TaggedPrompt:
    tagged: str
    plain: str
    spans: tuple[SubjectSpan, ...]

    @property
    def subject_indices(self) -> tuple[int, ...]:
        """Distinct subject indices in order of first appearance."""
        seen: list[int] = []
        for span in self.spans:
            if span.index not in seen:
                seen.append(span.index)
        return tuple(seen)


def parse_tagged(tagged: str) -> TaggedPrompt:
    """Split a tagged string into plain text and subject spans; raise TagError if malformed."""
    if not isinstance(tagged, str):
        raise TagError(f"expected a string, got {type(tagged).__name__}")
    if re.search(r"<\s*/?\s*subj\s*>", tagged):
        raise TagError(f"unindexed <subj> tag in {tagged!r}; use <subj1>, <subj2>, ...")
    plain_parts: list[str] = []
    spans: list[SubjectSpan] = []
    cursor = 0
    plain_len = 0
    open_index: int | None = None
    open_at = 0
    for match in _TAG.finditer(tagged):
        text = tagged[cursor:match.start()]
        plain_parts.append(text)
        plain_len += len(text)
        cursor = match.end()
        closing, index = match.group(1) == "/", int(match.group(2))
        if index < 1:
            raise TagError(f"subject index must start at 1, got <subj{index}> in {tagged!r}")
        if not closing:
            if open_index is not None:
                raise TagError(f"nested <subj{index}> inside <subj{open_index}> in {tagged!r}")
            open_index, open_at = index, plain_len
            continue
        if open_index != index:
            raise TagError(f"</subj{index}> without a matching <subj{index}> in {tagged!r}")
        plain_so_far = "".join(plain_parts)
        span_text = plain_so_far[open_at:plain_len]
        if not span_text.strip():
            raise TagError(f"empty <subj{index}> span in {tagged!r}")
        # Spans exclude surrounding white space so that they start on a word.
        lead = len(span_text) - len(span_text.lstrip())
        trail = len(span_text) - len(span_text.rstrip())
        spans.append(SubjectSpan(index, open_at + lead, plain_len - trail, span_text.strip()))
        open_index = None
    if open_index is not None:
        raise TagError(f"<subj{open_index}> is never closed in {tagged!r}")
    plain_parts.append(tagged[cursor:])
    return TaggedPrompt(tagged=tagged, plain="".join(plain_parts), spans=tuple(spans))


def strip_tags(tagged: str) -> str:
    return parse_tagged(tagged).plain


def tag_span(plain: str, start: int, end: int, index: int = 1) -> str:
    """Wrap plain[start:end] in <subj{index}> tags."""
    return f"{plain[:start]}<subj{index}>{plain[start:end]}</subj{index}>{plain[end:]}"
