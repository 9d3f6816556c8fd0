"""SDXL prompt encoding with pseudo-words inserted before subject tokens (Eq. 4).

    w = f(z)                      (Eq. 3, the mapper; not here)
    ê = insert(e, w, i)           (Eq. 4): w goes into the token embeddings e just before the concept token i

Insertion happens at the token-id level: a placeholder id is put before the first sub-token of every
`<subjN>` span, so every later token (and EOS, hence the pooled output) shifts right by one, exactly as if
the pseudo-word were a word of the prompt. During the text encoder's forward a hook on its token-embedding
layer replaces the placeholder's embedding with w (position embeddings are still added, as for any word).
SDXL has two text encoders; a pseudo-word is one vector of d1 + d2 (768 + 1280 = 2048), split between them.

The placeholder id must exist in the vocabulary and be below EOS (49407): SDXL's text encoder configs carry
the legacy `eos_token_id = 2`, for which transformers pools at `input_ids.argmax(-1)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from diffusers.utils.torch_utils import get_module_execution_device
from torch import Tensor
from transformers import PreTrainedModel

from cocoins.data.tags import TaggedPrompt, parse_tagged

DEFAULT_PLACEHOLDER = "sks"  # a rare single CLIP token; its embedding is always overwritten


class SubjectTruncatedError(ValueError):
    """A `<subjN>` span's concept token falls outside the tokenizers' window (SDXL: 77 tokens)."""


@dataclass(frozen=True)
class TokenSequences:
    """One tokenizer's ids for a batch, and where the pseudo-words sit in them."""

    input_ids: Tensor                       # [B, L] long (L: the window, 77 in SDXL): BOS .. EOS, padding
    positions: tuple[tuple[int, ...], ...]  # per prompt: placeholder positions (insert=True) or span starts
    subjects: tuple[tuple[int, ...], ...]   # per prompt: subject index N (of <subjN>) for each position


@dataclass(frozen=True)
class TokenizedPrompts:
    prompts: tuple[TaggedPrompt, ...]
    sequences: tuple[TokenSequences, TokenSequences]  # (tokenizer, tokenizer_2)
    inserted: bool
    dropped: tuple[tuple[int, ...], ...]  # per prompt: subject indices of spans cut off by the window

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def num_subjects(self) -> int:
        """Largest subject index with a position in any prompt: `pseudo_words` needs S >= this."""
        return max((max(s) for s in self.sequences[0].subjects if s), default=0)


@dataclass
class EncodedPrompts:
    prompt_embeds: Tensor         # [B, L, d_ctx]: both encoders' penultimate hidden states, concatenated
    pooled_prompt_embeds: Tensor  # [B, p]: text_encoder_2's projected pooled output


class PromptEncoder:
    """Tokenize tagged prompts and encode them for SDXL, optionally with pseudo-words (Eq. 4).

    Args:
        tokenizer, tokenizer_2: SDXL's CLIP tokenizers (fast, with offsets).
        text_encoder: `CLIPTextModel` (CLIP ViT-L in SDXL, d1 = 768).
        text_encoder_2: `CLIPTextModelWithProjection` (OpenCLIP bigG in SDXL, d2 = 1280, pooled 1280).
        placeholder: word whose (single) token id marks pseudo-word slots.
    """

    def __init__(self, tokenizer, tokenizer_2, text_encoder: PreTrainedModel, text_encoder_2: PreTrainedModel,
                 placeholder: str = DEFAULT_PLACEHOLDER):
        self.tokenizers = (tokenizer, tokenizer_2)
        self.text_encoders = (text_encoder, text_encoder_2)
        self.placeholder_ids = tuple(self._placeholder_id(tok, placeholder) for tok in self.tokenizers)

    @classmethod
    def from_pipeline(cls, pipe, placeholder: str = DEFAULT_PLACEHOLDER) -> "PromptEncoder":
        return cls(pipe.tokenizer, pipe.tokenizer_2, pipe.text_encoder, pipe.text_encoder_2, placeholder)

    @staticmethod
    def _placeholder_id(tokenizer, placeholder: str) -> int:
        ids = tokenizer(placeholder, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"placeholder {placeholder!r} is {len(ids)} tokens; pick a word that is one token")
        specials = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
        if ids[0] in specials or ids[0] >= tokenizer.eos_token_id:
            # argmax pooling (legacy eos_token_id = 2) would pool at an id >= EOS.
            raise ValueError(f"placeholder {placeholder!r} (id {ids[0]}) must be an ordinary token below EOS "
                             f"({tokenizer.eos_token_id})")
        return ids[0]

    @property
    def pseudo_word_dims(self) -> tuple[int, int]:
        """(d1, d2): token-embedding widths of the two text encoders; a pseudo-word has d1 + d2 entries."""
        return tuple(enc.get_input_embeddings().embedding_dim for enc in self.text_encoders)

    # ---------------------------------------------------------------- tokenize
    def tokenize(self, tagged_prompts: Sequence[str], insert: bool,
                 on_truncated: Literal["error", "drop"] = "error") -> TokenizedPrompts:
        """Tokenize the plain text of tagged prompts as SDXL's `encode_prompt` does (pad to the tokenizers'
        `model_max_length`, 77 in SDXL; truncate).

        With `insert=True` a placeholder goes before the first sub-token of every `<subjN>` span, in both
        tokenizers' ids; content is truncated to keep BOS .. EOS within the window. A span whose concept token falls
        outside the window raises `SubjectTruncatedError`, or with `on_truncated="drop"` gets no slot and
        its subject index is recorded in `dropped`. With `insert=False`, positions are the spans' first
        sub-tokens (ids identical to diffusers').
        """
        if isinstance(tagged_prompts, str):
            raise TypeError("tokenize takes a sequence of prompts; wrap a single prompt in a list")
        prompts = tuple(parse_tagged(p) for p in tagged_prompts)
        plain = [p.plain for p in prompts]
        spans = [self._span_tokens(tok, prompts, plain) for tok in self.tokenizers]
        capacity = min(tok.model_max_length for tok in self.tokenizers) - 2  # content between BOS and EOS
        # Spans are left to right, so the ones that fit form a prefix; keep it only where it fits in both
        # tokenizers (tokenizer_2 splits "!" off, so it can run a few tokens longer).
        keep = [min(self._fitting(all_starts[b], capacity, insert) for _, all_starts in spans)
                for b in range(len(prompts))]
        dropped = tuple(tuple(span.index for span in p.spans[n:]) for p, n in zip(prompts, keep))
        for p, n in zip(prompts, keep):
            if n < len(p.spans) and on_truncated == "error":
                span = p.spans[n]
                raise SubjectTruncatedError(
                    f"<subj{span.index}>{span.text}</subj{span.index}> falls beyond the {capacity + 2}-token window in "
                    f"{p.tagged!r}; shorten the prompt or move the subject earlier")
        sequences = tuple(self._build(tok, pid, prompts, content, starts, keep, insert)
                          for tok, pid, (content, starts) in zip(self.tokenizers, self.placeholder_ids, spans))
        return TokenizedPrompts(prompts, sequences, insert, dropped)

    @staticmethod
    def _span_tokens(tokenizer, prompts, plain) -> tuple[list[list[int]], list[list[int]]]:
        """Content ids (no BOS/EOS, untruncated) and, per span, the index of the token holding its first
        character. Offsets survive lowercasing, whitespace folding and spans that start mid-word, which
        re-tokenizing the text before the span would not."""
        enc = tokenizer(plain, add_special_tokens=False, return_offsets_mapping=True)
        all_starts = []
        for prompt, offsets in zip(prompts, enc.offset_mapping):
            starts = []
            for span in prompt.spans:
                token = next((j for j, (_, end) in enumerate(offsets) if end > span.start), None)
                if token is None:
                    raise ValueError(f"no token covers <subj{span.index}>{span.text!r} in {prompt.plain!r}")
                starts.append(token)
            all_starts.append(starts)
        return enc.input_ids, all_starts

    @staticmethod
    def _positions(starts: list[int], insert: bool) -> list[int]:
        """Slot of each span in the final ids: +1 for BOS, +k for the k placeholders inserted before it."""
        return [1 + token + (k if insert else 0) for k, token in enumerate(starts)]

    @classmethod
    def _fitting(cls, starts: list[int], capacity: int, insert: bool) -> int:
        """How many leading spans fit: the concept token itself (after its placeholder) must precede EOS."""
        n = 0
        for position in cls._positions(starts, insert):
            if position + (1 if insert else 0) > capacity:
                break
            n += 1
        return n

    @classmethod
    def _build(cls, tokenizer, placeholder_id: int, prompts, contents, all_starts, keep, insert) -> TokenSequences:
        max_len = tokenizer.model_max_length
        rows, positions, subjects = [], [], []
        for prompt, content, starts, n in zip(prompts, contents, all_starts, keep):
            pos = cls._positions(starts[:n], insert)
            ids = list(content)
            if insert:
                for position in pos:  # left to right: positions already count earlier placeholders
                    ids.insert(position - 1, placeholder_id)  # -1: content has no BOS yet
            ids = [tokenizer.bos_token_id] + ids[:max_len - 2] + [tokenizer.eos_token_id]
            rows.append(ids + [tokenizer.pad_token_id] * (max_len - len(ids)))
            positions.append(tuple(pos))
            subjects.append(tuple(span.index for span in prompt.spans[:n]))
        input_ids = torch.tensor(rows, dtype=torch.long).reshape(len(prompts), max_len)
        return TokenSequences(input_ids, tuple(positions), tuple(subjects))

    # ---------------------------------------------------------------- encode
    def encode(self, tokenized: TokenizedPrompts, pseudo_words: Tensor | None = None) -> EncodedPrompts:
        """Encode as SDXL does: penultimate hidden states of both encoders, concatenated, plus the
        projected pooled output of encoder 2; with `pseudo_words` [B, S, d1 + d2] the slot of subject k in
        prompt b gets `pseudo_words[b, k-1, :d1]` in encoder 1 and `[b, k-1, d1:]` in encoder 2 (Eq. 4).

        Differentiable w.r.t. `pseudo_words`; works under `torch.no_grad()` and with fp16/bf16 encoders.
        """
        d1, d2 = self.pseudo_word_dims
        if pseudo_words is not None:
            self._check_pseudo_words(tokenized, pseudo_words, d1 + d2)
        elif tokenized.inserted:
            raise ValueError("prompts were tokenized with insert=True but no pseudo_words were given; "
                             "pass pseudo_words or tokenize with insert=False")
        hidden, pooled = [], None
        for k, (encoder, seq) in enumerate(zip(self.text_encoders, tokenized.sequences)):
            vectors = None
            if pseudo_words is not None:
                vectors = pseudo_words[..., :d1] if k == 0 else pseudo_words[..., d1:]
            out = self._run_encoder(encoder, seq, vectors)
            hidden.append(out.hidden_states[-2])
            if k == 1:
                # CLIPTextModelWithProjection's first output is the projected pooled embedding ("text_embeds"),
                # what diffusers' encode_prompt takes as pooled_prompt_embeds.
                pooled = out[0]
        prompt_embeds = torch.cat(hidden, dim=-1).to(dtype=self.text_encoders[1].dtype)
        return EncodedPrompts(prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled)

    @staticmethod
    def _check_pseudo_words(tokenized: TokenizedPrompts, pseudo_words: Tensor, width: int) -> None:
        if not tokenized.inserted:
            raise ValueError("pseudo_words need placeholder slots: tokenize with insert=True")
        if pseudo_words.ndim != 3 or pseudo_words.shape[0] != len(tokenized) or pseudo_words.shape[2] != width:
            raise ValueError(f"pseudo_words must be [B={len(tokenized)}, S, d1+d2={width}], "
                             f"got {list(pseudo_words.shape)}")
        if pseudo_words.shape[1] < tokenized.num_subjects:
            raise ValueError(f"pseudo_words has S={pseudo_words.shape[1]} subjects but the prompts use "
                             f"<subj{tokenized.num_subjects}>; pass S >= {tokenized.num_subjects}")

    @staticmethod
    def _run_encoder(encoder: PreTrainedModel, seq: TokenSequences, vectors: Tensor | None):
        embedding = encoder.get_input_embeddings()
        # Where the inputs must go, also under model/sequential CPU offload (as diffusers' encode_prompt).
        input_ids = seq.input_ids.to(get_module_execution_device(encoder))
        handle = None
        if vectors is not None:
            rows = [b for b, pos in enumerate(seq.positions) for _ in pos]
            cols = [p for pos in seq.positions for p in pos]
            slots = [s - 1 for subj in seq.subjects for s in subj]

            def overwrite(module, args, output: Tensor) -> Tensor:
                if output.shape[:2] != input_ids.shape:
                    raise RuntimeError(f"embedding hook saw input {list(output.shape)}, expected "
                                       f"{list(input_ids.shape)}: the encoder was called with other ids")
                if not rows:
                    return output
                b, t, s = (torch.tensor(x, device=output.device) for x in (rows, cols, slots))
                values = vectors.to(device=output.device, dtype=output.dtype)[b, s]
                # Out of place: autograd flows into `values` (the mapper's output), and the embedding
                # table, a leaf, is never written.
                return output.index_put((b, t), values)

            handle = embedding.register_forward_hook(overwrite)
        try:
            return encoder(input_ids, output_hidden_states=True)
        finally:
            if handle is not None:
                handle.remove()
