"""Which training rows have a `<subj>` tag past the base model's text window, found before training.

Training tokenizes both captions of a row with a pseudo-word inserted before every subject span (Eq. 4,
`PromptEncoder.tokenize(insert=True)`), and a span whose concept token falls outside the tokenizers' window
(SDXL: 77 tokens, the mini world: 40) raises `SubjectTruncatedError` mid-run, hours in. precompute asks the
same function with `on_truncated="drop"` over every row first, with the base model's own tokenizers, so
the rule is training's by construction, and such a row is a recorded skip with its reason.
"""

from __future__ import annotations

from typing import Sequence

from cocoins.data.tags import TagError
from cocoins.sdxl.encode import PromptEncoder

BATCH = 256   # captions per tokenizer call: fast tokenizers batch, and one call per row would be slow


def load_tokenizers(model: str):
    """SDXL's two tokenizers from a diffusers directory or hub id (no weights are read)."""
    from transformers import CLIPTokenizer

    return tuple(CLIPTokenizer.from_pretrained(model, subfolder=sub) for sub in ("tokenizer", "tokenizer_2"))


def window_reasons(tagged1: Sequence[str], tagged2: Sequence[str], tokenizers) -> list[str]:
    """Per row, "" if every subject of both captions fits the window, else the skip reason."""
    encoder = PromptEncoder(*tokenizers, text_encoder=None, text_encoder_2=None)
    window = min(tok.model_max_length for tok in tokenizers)
    reasons = []
    for start in range(0, len(tagged1), BATCH):
        pairs = list(zip(tagged1[start:start + BATCH], tagged2[start:start + BATCH]))
        try:
            reasons += _reasons(encoder, pairs, window)
        except (TagError, ValueError):   # a caption training could not tokenize either: find it, row by row
            reasons += [_row_reason(encoder, pair, window) for pair in pairs]
    return reasons


def _reasons(encoder: PromptEncoder, pairs: list[tuple[str, str]], window: int) -> list[str]:
    dropped = encoder.tokenize([c for pair in pairs for c in pair], insert=True, on_truncated="drop").dropped
    out = []
    for first, second in zip(dropped[0::2], dropped[1::2]):
        lost = sorted(set(first) | set(second))
        out.append(f"subject tag past the {window}-token text window (<subj{lost[0]}>)" if lost else "")
    return out


def _row_reason(encoder: PromptEncoder, pair: tuple[str, str], window: int) -> str:
    try:
        return _reasons(encoder, [pair], window)[0]
    except (TagError, ValueError) as err:
        return f"caption cannot be tokenized for training ({str(err)[:80]})"
