"""Offline CLIP tokenizers for SDXL, built from the BPE table that open-clip-torch ships.

SDXL's two tokenizers are both OpenAI's CLIP BPE (49,408 tokens, 77-token window); they differ only in the
pad token: `tokenizer` pads with <|endoftext|>, `tokenizer_2` pads with "!" (id 0). No hub download is
possible here, so we rebuild vocab.json + merges.txt from `open_clip/bpe_simple_vocab_16e6.txt.gz` the way
open_clip's `SimpleTokenizer` builds its encoder. Real SDXL directories bring their own tokenizer files;
these are for the tiny pipeline and tests.

Note: with pad_token "!" the tokenizer registers "!" as a special token and always splits it off, so
`tokenizer_2` tokenizes ")!" as ")", "!" where open_clip merges them. That is also what the real SDXL
`tokenizer_2` does (its tokenizer_config.json has the same pad token).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
from pathlib import Path

from transformers import CLIPTokenizer

MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# open_clip: merges = lines[1 : 49152 - 256 - 2 + 1]; 256 byte tokens + 256 "</w>" tokens + merges + 2 specials.
_NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408


def bpe_path() -> Path:
    """The gzipped BPE table bundled with open-clip-torch, found without importing open_clip (slow, heavy)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open-clip-torch is not installed; it ships the CLIP BPE table "
                                "(pip install open-clip-torch==3.3.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall open-clip-torch")
    return path


def _bytes_to_unicode() -> list[str]:
    """GPT-2 / CLIP byte -> printable character table, in CLIP's vocab order (same as open_clip)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(token -> id, BPE merges), identical to open_clip's SimpleTokenizer encoder and bpe_ranks."""
    lines = gzip.open(bpe_path()).read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1:_NUM_MERGES + 1])
    if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_path()} does not look like CLIP's BPE table ({len(merges)} merges)")
    byte_tokens = _bytes_to_unicode()
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"CLIP vocab has {len(vocab)} entries, expected {VOCAB_SIZE}")
    return vocab, merges


def _pad_token(second: bool) -> str:
    return "!" if second else EOS


def build_clip_tokenizer(second: bool = False, max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """An SDXL tokenizer in memory: `second=False` is `tokenizer` (pads with EOS), True is `tokenizer_2` ("!").
    `max_length`: the window prompts are padded and truncated to (SDXL's 77; the mini SDXL's is shorter)."""
    if max_length < 3:
        raise ValueError(f"max_length must hold BOS, one token and EOS, not {max_length}")
    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=max_length,
                         pad_token=_pad_token(second))


def write_clip_tokenizer_files(directory: str | os.PathLike, second: bool = False) -> Path:
    """Write vocab.json, merges.txt and tokenizer_config.json, the layout of SDXL's tokenizer folders.

    `CLIPTokenizer.from_pretrained(directory)` then loads it offline.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    # merges.txt carries the same "#version" header line as the HF CLIP files.
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "bos_token": BOS,
              "eos_token": EOS, "unk_token": EOS, "pad_token": _pad_token(second)}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory
